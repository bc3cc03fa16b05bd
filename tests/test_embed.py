from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from lsun_crowd.backbones import TorchvisionBackbone, hub_checkpoint_path
from lsun_crowd.config import ModelConfig
from lsun_crowd.embed import EmbeddingCache, EmbeddingError, PixelBackbone, embed_items, load_image
from lsun_crowd.embedding_cache import shard_rows_for


def key(number: int) -> str:
    return hashlib.sha256(str(number).encode()).hexdigest()


def random_keys(generator: np.random.Generator, count: int) -> list[str]:
    return [bytes(row).hex() for row in generator.integers(0, 256, (count, 32), dtype=np.uint8)]


def test_cache_round_trip_and_reopen(tmp_path: Path) -> None:
    a, b, c = key(1), key(2), key(3)
    with EmbeddingCache(tmp_path, dim=3) as cache:
        cache.append([a, b], np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
        cache.append([b, c], np.array([[9, 9, 9], [7, 8, 9]], dtype=np.float32))  # b is kept, not replaced
        np.testing.assert_array_equal(cache.get([c, a]), [[7, 8, 9], [1, 2, 3]])  # before any flush
        assert list(tmp_path.glob("shard-*")) == []
    assert [path.name for path in tmp_path.iterdir()] == ["shard-000000.emb"]  # one shard, one fsync
    reopened = EmbeddingCache(tmp_path, dim=3)
    assert len(reopened) == 3 and a in reopened and key(4) not in reopened
    assert reopened.contains([a, key(4), c, "not a hash"]).tolist() == [True, False, True, False]
    np.testing.assert_array_equal(reopened.get([c, a, b]), [[7, 8, 9], [1, 2, 3], [4, 5, 6]])
    with pytest.raises(EmbeddingError, match="2 image\\(s\\) have no cached embedding, e.g. zzz"):
        reopened.get([a, "zzz", key(5)])
    with pytest.raises(EmbeddingError, match="keyed by SHA-256 hex digests, not 'zzz'"):
        reopened.append(["zzz"], np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(EmbeddingError, match="expected vectors of shape \\(1, 3\\), got \\(1, 2\\)"):
        reopened.append([a], np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(EmbeddingError, match="shard-000000.emb: holds 3-dimensional vectors, but this model makes 4"):
        EmbeddingCache(tmp_path, dim=4)


def test_full_shards_are_written_as_rows_come_and_the_rest_on_flush(tmp_path: Path) -> None:
    # About 64 MiB a shard: what a crash may lose, and what waits in memory.
    assert [shard_rows_for(dim) for dim in (16, 512, 2048)] == [65_536, 32_263, 8_160]
    cache = EmbeddingCache(tmp_path, dim=3, shard_rows=800)
    keys = [key(number) for number in range(2_000)]
    vectors = np.arange(6_000, dtype=np.float32).reshape(2_000, 3)
    cache.append(keys[:1_500], vectors[:1_500])
    assert len(list(tmp_path.glob("shard-*"))) == 1  # the first 800 rows; the rest wait in memory
    cache.append(keys[1_500:], vectors[1_500:])
    assert len(list(tmp_path.glob("shard-*"))) == 2 and len(cache) == 2_000
    np.testing.assert_array_equal(cache.get(keys[::-97]), vectors[::-97])
    cache.flush()
    reopened = EmbeddingCache(tmp_path, dim=3)
    assert len(list(tmp_path.glob("shard-*"))) == 3 and len(reopened) == 2_000
    np.testing.assert_array_equal(reopened.get(keys[::-97]), vectors[::-97])


def test_a_cache_dropped_without_flush_still_writes_its_rows(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, dim=1)
    cache.append([key(1)], np.ones((1, 1), dtype=np.float32))
    del cache
    np.testing.assert_array_equal(EmbeddingCache(tmp_path, dim=1).get([key(1)]), [[1]])


def test_a_process_killed_mid_write_leaves_a_cache_with_every_durable_row(tmp_path: Path) -> None:
    """A writer dies after one durable shard, with rows waiting and a shard half written: the cache
    opens with the durable rows, and the half-written file is ignored while its writer lives and
    deleted once it is gone."""
    script = f"""
import os, socket, sys
import numpy as np
from pathlib import Path
from lsun_crowd.embedding_cache import EmbeddingCache
cache = EmbeddingCache(Path({str(tmp_path)!r}), dim=2)
cache.append({[key(n) for n in range(3)]!r}, np.arange(6, dtype=np.float32).reshape(3, 2))
cache.flush()
cache.append({[key(n) for n in range(3, 5)]!r}, np.ones((2, 2), dtype=np.float32))
torn = Path({str(tmp_path)!r}) / f".partial-{{socket.gethostname()}}-{{os.getpid()}}-0000abcd"
torn.write_bytes(b"LSUNEMB1" + bytes(100))  # a shard cut off mid-write
sys.stdout.write("written\\n")
sys.stdout.flush()
sys.stdin.read()  # held open until the test has looked
os._exit(9)  # no flush, no finalizer: as if killed
"""
    writer = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdin is not None
    assert writer.stdout.readline() == "written\n"
    torn = next(tmp_path.glob(".partial-*"))
    alive = EmbeddingCache(tmp_path, dim=2)
    assert len(alive) == 3 and torn.exists()  # a live writer's partial file is left alone
    writer.stdin.close()
    assert writer.wait(timeout=60) == 9
    reopened = EmbeddingCache(tmp_path, dim=2)
    assert len(reopened) == 3 and not torn.exists()
    np.testing.assert_array_equal(reopened.get([key(2), key(0)]), [[4, 5], [0, 1]])
    assert key(3) not in reopened  # it was never durable: the next run embeds it again


def test_a_shard_that_is_not_whole_is_moved_aside(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path, dim=2) as cache:
        cache.append([key(1)], np.ones((1, 2), dtype=np.float32))
    with EmbeddingCache(tmp_path, dim=2) as cache:
        cache.append([key(2)], np.full((1, 2), 2, dtype=np.float32))
    second = tmp_path / "shard-000001.emb"
    second.write_bytes(second.read_bytes()[:-3])  # e.g. a copy cut short
    reopened = EmbeddingCache(tmp_path, dim=2)
    assert len(reopened) == 1 and key(1) in reopened and key(2) not in reopened
    assert (tmp_path / "shard-000001.emb.corrupt").exists() and not second.exists()
    reopened.append([key(2)], np.full((1, 2), 5, dtype=np.float32))
    reopened.flush()
    np.testing.assert_array_equal(EmbeddingCache(tmp_path, dim=2).get([key(2)]), [[5, 5]])


@pytest.mark.parametrize(
    "damage",
    ["a torn trailing row", "a flipped vector bit", "a flipped key bit", "a zeroed page"],
)
def test_a_damaged_shard_is_never_read(tmp_path: Path, damage: str) -> None:
    keys = [key(number) for number in range(50)]
    vectors = np.arange(200, dtype=np.float32).reshape(50, 4)
    with EmbeddingCache(tmp_path, dim=4) as cache:
        cache.append(keys, vectors)
    shard = tmp_path / "shard-000000.emb"
    body = bytearray(shard.read_bytes())
    header, key_bytes = 64, 50 * 32
    if damage == "a torn trailing row":  # a full disk cut the next row short: what follows shifts
        body += np.ones(4, dtype=np.float32).tobytes()[:9]
    elif damage == "a flipped vector bit":
        body[header + key_bytes + 4 * 37] ^= 0x10
    elif damage == "a flipped key bit":
        body[header + 32 * 7] ^= 0x01
    else:
        body[header + 100 : header + 612] = bytes(512)
    shard.write_bytes(bytes(body))
    reopened = EmbeddingCache(tmp_path, dim=4)
    assert len(reopened) == 0 and not reopened.contains(keys).any()  # nothing from it is trusted
    assert (tmp_path / "shard-000000.emb.corrupt").exists()
    with pytest.raises(EmbeddingError, match="no cached embedding"):
        reopened.get(keys[:1])
    reopened.append(keys, vectors + 1)  # embedded again, and read back whole
    reopened.flush()
    np.testing.assert_array_equal(EmbeddingCache(tmp_path, dim=4).get(keys), vectors + 1)


def test_a_shard_written_before_checksums_is_still_read(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path, dim=2) as cache:
        cache.append([key(1), key(2)], np.array([[1, 2], [3, 4]], dtype=np.float32))
    shard = tmp_path / "shard-000000.emb"
    data = bytearray(shard.read_bytes())
    data[:8] = b"LSUNEMB1"
    data[24:28] = bytes(4)  # that format had no checksum field
    shard.write_bytes(bytes(data))
    np.testing.assert_array_equal(EmbeddingCache(tmp_path, dim=2).get([key(2), key(1)]), [[3, 4], [1, 2]])


def write_legacy(directory: Path, keys: list[str], vectors: np.ndarray) -> None:
    """The format before shards: vectors appended to vectors.f32, then their keys to keys.txt."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vectors.f32").write_bytes(np.asarray(vectors, dtype=np.float32).tobytes())
    (directory / "keys.txt").write_text("".join(k + "\n" for k in keys))


def test_a_cache_of_the_format_before_shards_moves_into_shards(tmp_path: Path) -> None:
    keys = [key(number) for number in range(5)]
    write_legacy(tmp_path, keys, np.arange(10).reshape(5, 2))
    cache = EmbeddingCache(tmp_path, dim=2)
    assert len(cache) == 5 and not (tmp_path / "vectors.f32").exists() and not (tmp_path / "keys.txt").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["shard-000000.emb"]
    np.testing.assert_array_equal(EmbeddingCache(tmp_path, dim=2).get(keys[::-1]), np.arange(10).reshape(5, 2)[::-1])


def test_a_torn_cache_of_the_old_format_keeps_its_whole_rows(tmp_path: Path) -> None:
    keys = [key(number) for number in range(4)]
    # Four keys, but the vectors were cut in the middle of the third row: rows 0 and 1 are whole.
    write_legacy(tmp_path / "keys-ahead", keys, np.arange(8).reshape(4, 2))
    vectors = tmp_path / "keys-ahead" / "vectors.f32"
    vectors.write_bytes(vectors.read_bytes()[: 2 * 8 + 5])
    cache = EmbeddingCache(tmp_path / "keys-ahead", dim=2)
    assert len(cache) == 2 and keys[2] not in cache
    np.testing.assert_array_equal(cache.get(keys[:2]), [[0, 1], [2, 3]])
    # Three vectors, but the keys' write was cut mid-line: the orphan row and the torn key go.
    write_legacy(tmp_path / "vectors-ahead", keys[:2], np.arange(6).reshape(3, 2))
    with (tmp_path / "vectors-ahead" / "keys.txt").open("a") as handle:
        handle.write(keys[2][:20])
    cache = EmbeddingCache(tmp_path / "vectors-ahead", dim=2)
    assert len(cache) == 2 and keys[2] not in cache
    np.testing.assert_array_equal(cache.get(keys[1::-1]), [[2, 3], [0, 1]])


def test_lookups_of_200_thousand_keys_agree_with_a_dict(tmp_path: Path) -> None:
    generator = np.random.default_rng(5)
    keys = random_keys(generator, 200_000)
    # Digests that share their first 8 bytes, which the index sorts by: told apart by the rest.
    keys[:3] = ["00" * 8 + tail[16:] for tail in random_keys(generator, 3)]
    vectors = generator.normal(size=(200_000, 4)).astype(np.float32)
    stored = dict(zip(keys[:190_000], vectors[:190_000], strict=True))  # the last 10,000 never go in
    cache = EmbeddingCache(tmp_path, dim=4)
    for start in range(0, 190_000, 30_000):
        end = min(start + 30_000, 190_000)
        cache.append(keys[start:end], vectors[start:end])

    def check(reader: EmbeddingCache) -> None:
        picked = [keys[int(i)] for i in generator.integers(0, 200_000, 20_000)]
        queries = picked + keys[:3] + random_keys(generator, 1_000) + ["00" * 8 + "ff" * 24]
        found = reader.contains(queries)
        assert found.tolist() == [query in stored for query in queries]
        present = [query for query in queries if query in stored]
        np.testing.assert_array_equal(reader.get(present), np.stack([stored[query] for query in present]))

    assert len(list(tmp_path.glob("shard-*"))) == 2  # 131,072 rows in shards, the rest waiting
    check(cache)
    cache.flush()
    reopened = EmbeddingCache(tmp_path, dim=4)
    assert len(reopened) == 190_000
    check(reopened)


def test_the_index_of_a_million_keys_is_small_and_fast(tmp_path: Path) -> None:
    generator = np.random.default_rng(6)
    with EmbeddingCache(tmp_path, dim=1) as cache:
        for start in range(0, 1_000_000, 65_536):
            count = min(65_536, 1_000_000 - start)
            keys = random_keys(generator, count)
            cache.append(keys, np.arange(start, start + count, dtype=np.float32)[:, None])
            if start == 7 * 65_536:
                looked_for = keys[:20_000]
    tracemalloc.start()
    began = time.perf_counter()
    reopened = EmbeddingCache(tmp_path, dim=1)
    opened = time.perf_counter() - began
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(reopened) == 1_000_000
    assert held < 20e6 and peak < 40e6, (held, peak)  # 16 bytes a key, not a dict of strings
    began = time.perf_counter()
    vectors = reopened.get(looked_for)
    looked_up = time.perf_counter() - began
    np.testing.assert_array_equal(vectors[:, 0], np.arange(7 * 65_536, 7 * 65_536 + 20_000))
    assert opened < 5 and looked_up < 1, (opened, looked_up)  # about 0.2 s and 0.02 s on two cores


class CountingModel:
    key = "counting"
    dim = 1

    def __init__(self) -> None:
        self.seen = 0

    def embed(self, images):  # type: ignore[no-untyped-def]
        self.seen += len(images)
        return np.array([[float(np.asarray(image).mean())] for image in images], dtype=np.float32)


def png(path: Path, shade: int) -> tuple[str, str]:
    Image.new("RGB", (4, 4), (shade,) * 3).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest(), str(path)


def test_images_are_embedded_once(tmp_path: Path) -> None:
    items = [png(tmp_path / f"{number}.png", number * 10) for number in range(5)]
    model, cache = CountingModel(), EmbeddingCache(tmp_path / "cache", 1)
    assert embed_items(model, cache, items[:3], batch_size=2).computed == 3
    assert embed_items(model, cache, items, batch_size=2).computed == 2
    assert model.seen == 5
    np.testing.assert_allclose(cache.get([items[4][0]]), [[40.0]])


def test_unreadable_missing_or_changed_images_are_reported_and_skipped(tmp_path: Path) -> None:
    good = png(tmp_path / "good.png", 1)
    (tmp_path / "bad.png").write_text("not a png")
    changed = png(tmp_path / "changed.png", 2)
    png(tmp_path / "changed.png", 3)  # rewritten after "ingest"
    bad = (hashlib.sha256(b"not a png").hexdigest(), str(tmp_path / "bad.png"))
    items = [good, bad, ("c" * 64, str(tmp_path / "gone.png")), changed]
    cache = EmbeddingCache(tmp_path / "c", 1)
    report = embed_items(CountingModel(), cache, items, 4)
    assert report.computed == 1 and good[0] in cache and len(cache) == 1
    assert "bad.png: cannot read image" in report.failed[bad[0]]
    assert "gone.png: cannot read image: no such file" in report.failed["c" * 64]
    assert "changed.png: the file changed since it was ingested" in report.failed[changed[0]]


def test_a_file_unchanged_in_size_and_mtime_is_trusted_without_hashing(tmp_path: Path) -> None:
    sha, uri = png(tmp_path / "a.png", 10)
    status = Path(uri).stat()
    png(tmp_path / "a.png", 200)  # other pixels, the same size
    assert Path(uri).stat().st_size == status.st_size
    os.utime(uri, ns=(status.st_atime_ns, status.st_mtime_ns))  # and the mtime put back
    trusted = embed_items(
        CountingModel(), EmbeddingCache(tmp_path / "1", 1), [(sha, uri, status.st_size, status.st_mtime_ns)], 4
    )
    assert trusted.computed == 1 and not trusted.failed  # a stat, not a hash: this change goes unseen
    for known in [
        (sha, uri),
        (sha, uri, status.st_size, status.st_mtime_ns + 1),
        (sha, uri, status.st_size + 1, status.st_mtime_ns),
    ]:
        report = embed_items(CountingModel(), EmbeddingCache(tmp_path / str(len(known)), 1), [known], 4)
        assert report.computed == 0 and "a.png: the file changed since it was ingested" in report.failed[sha]


def test_loader_workers_give_the_pixel_backbone_the_same_numbers(tmp_path: Path) -> None:
    generator = np.random.default_rng(3)
    items = []
    for number in range(150):
        path = tmp_path / f"{number}.png"
        Image.fromarray(generator.integers(0, 255, (12, 9, 3), dtype=np.uint8)).save(path)
        items.append((hashlib.sha256(path.read_bytes()).hexdigest(), str(path)))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    bad = (hashlib.sha256(b"not a png").hexdigest(), str(tmp_path / "bad.png"))
    backbone = PixelBackbone(ModelConfig(backbone="pixels", image_size=8))
    expected = backbone.embed([load_image(uri) for _, uri in items])
    for workers in (0, 2):
        cache = EmbeddingCache(tmp_path / f"cache-{workers}", backbone.dim)
        settled: list[int] = []
        report = embed_items(backbone, cache, [*items[:70], bad, *items[70:]], 32, settled.append, workers=workers)
        assert report.computed == 150 and list(report.failed) == [bad[0]] and sum(settled) == 151
        assert "bad.png: cannot read image: not an image" in report.failed[bad[0]]
        np.testing.assert_array_equal(
            EmbeddingCache(cache.directory, backbone.dim).get([sha for sha, _ in items]), expected
        )


def test_pixel_backbone() -> None:
    backbone = PixelBackbone(ModelConfig(backbone="pixels", image_size=8))
    image = Image.new("L", (16, 16), 255)
    image.paste(0, (0, 0, 8, 16))
    vectors = backbone.embed([image.convert("RGB")])
    assert vectors.shape == (1, 64) and vectors.dtype == np.float32
    rows = vectors.reshape(8, 8)
    np.testing.assert_allclose(rows[:, 0], 0.0)
    np.testing.assert_allclose(rows[:, -1], 1.0)


@pytest.fixture
def resnet_weights(tmp_path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()


def test_torchvision_backbone_loads_a_local_weights_file(tmp_path: Path, resnet_weights: dict) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(resnet_weights, path)
    backbone = TorchvisionBackbone("resnet18", ModelConfig(weights=str(path), image_size=64, device="cpu"))
    assert backbone.dim == 512 and backbone.weights_source == str(path)
    loaded = backbone.network.state_dict()
    assert torch.equal(loaded["conv1.weight"], resnet_weights["conv1.weight"])
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8))
    vectors = backbone.embed([image, image])
    assert vectors.shape == (2, 512) and np.allclose(vectors[0], vectors[1]) and np.isfinite(vectors).all()


def test_torchvision_weights_enum_from_the_local_hub_cache(
    tmp_path: Path, resnet_weights: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    config = ModelConfig(weights="IMAGENET1K_V1", image_size=32, device="cpu", offline=True)
    with pytest.raises(EmbeddingError, match="not in the local torch cache and downloads are off.*copy https://"):
        TorchvisionBackbone("resnet18", config)
    target = hub_checkpoint_path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    assert target.is_relative_to(tmp_path / "torch-home")
    target.parent.mkdir(parents=True)
    torch.save(resnet_weights, target)
    backbone = TorchvisionBackbone("resnet18", config)
    assert backbone.weights_source == str(target)
    assert torch.equal(backbone.network.state_dict()["conv1.weight"], resnet_weights["conv1.weight"])


def test_bad_weights_setting_is_explained(tmp_path: Path) -> None:
    named = "'IMAGENET9K' is not a weights file, a URL or one of DEFAULT, IMAGENET1K_V1"
    with pytest.raises(EmbeddingError, match=named):
        TorchvisionBackbone("resnet18", ModelConfig(weights="IMAGENET9K", device="cpu"))
    with pytest.raises(EmbeddingError, match="missing.pth does not exist"):
        TorchvisionBackbone("resnet18", ModelConfig(weights=str(tmp_path / "missing.pth"), device="cpu"))
