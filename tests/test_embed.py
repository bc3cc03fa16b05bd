from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from lsun_crowd.backbones import TorchvisionBackbone, hub_checkpoint_path
from lsun_crowd.config import ModelConfig
from lsun_crowd.embed import EmbeddingCache, EmbeddingError, PixelBackbone, embed_items


def test_cache_round_trip_and_reopen(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, dim=3)
    cache.append(["a", "b"], np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
    cache.append(["b", "c"], np.array([[9, 9, 9], [7, 8, 9]], dtype=np.float32))  # b is kept, not replaced
    reopened = EmbeddingCache(tmp_path, dim=3)
    assert len(reopened) == 3
    np.testing.assert_array_equal(reopened.get(["c", "a", "b"]), [[7, 8, 9], [1, 2, 3], [4, 5, 6]])
    with pytest.raises(EmbeddingError, match="1 image"):
        reopened.get(["zzz"])


def test_a_batch_cut_off_by_a_crash_is_dropped(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, dim=2)
    cache.append(["a"], np.ones((1, 2), dtype=np.float32))
    with (tmp_path / "vectors.f32").open("ab") as handle:  # vectors written, keys never were
        handle.write(np.zeros((3, 2), dtype=np.float32).tobytes())
    reopened = EmbeddingCache(tmp_path, dim=2)
    assert len(reopened) == 1 and (tmp_path / "vectors.f32").stat().st_size == 8
    reopened.append(["b"], np.full((1, 2), 5, dtype=np.float32))
    np.testing.assert_array_equal(EmbeddingCache(tmp_path, dim=2).get(["b"]), [[5, 5]])


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
    assert "gone.png: cannot read image: FileNotFoundError" in report.failed["c" * 64]
    assert "changed.png: the file changed since it was ingested" in report.failed[changed[0]]


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
    config = ModelConfig(weights="IMAGENET1K_V1", image_size=32, device="cpu")
    with pytest.raises(EmbeddingError, match="not in the local torch cache.*never downloads"):
        TorchvisionBackbone("resnet18", config)
    target = hub_checkpoint_path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    assert target.is_relative_to(tmp_path / "torch-home")
    target.parent.mkdir(parents=True)
    torch.save(resnet_weights, target)
    backbone = TorchvisionBackbone("resnet18", config)
    assert backbone.weights_source == str(target)
    assert torch.equal(backbone.network.state_dict()["conv1.weight"], resnet_weights["conv1.weight"])


def test_bad_weights_setting_is_explained(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="'IMAGENET9K' is not a weights file or one of DEFAULT, IMAGENET1K_V1"):
        TorchvisionBackbone("resnet18", ModelConfig(weights="IMAGENET9K", device="cpu"))
    with pytest.raises(EmbeddingError, match="missing.pth does not exist"):
        TorchvisionBackbone("resnet18", ModelConfig(weights=str(tmp_path / "missing.pth"), device="cpu"))
