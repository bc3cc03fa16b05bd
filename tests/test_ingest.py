from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from lsun_crowd.ingest import IngestError, ingest, ingest_gold
from lsun_crowd.schema import Gold, Item
from lsun_crowd.store import Store


def image(path: Path, seed: int, size: tuple[int, int] = (16, 12), fmt: str | None = None) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.for_project(tmp_path)


def count(store: Store) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count(Item.id))) or 0)


def test_folder_is_searched_recursively_for_every_format(tmp_path: Path, store: Store) -> None:
    pool = tmp_path / "pool"
    for number, suffix in enumerate(["jpg", "png", "webp", "bmp", "JPEG"]):
        image(pool / f"sub{number}" / f"img.{suffix}", number, fmt={"jpg": "JPEG", "JPEG": "JPEG"}.get(suffix))
    (pool / "notes.txt").write_text("not an image")
    report = ingest(store, [pool], tmp_path / "dl")
    assert (report.added, report.duplicates, report.rejected) == (5, 0, [])
    assert count(store) == 5
    with store.session() as session:  # what lets embedding trust the hash without reading the file again
        recorded = session.execute(select(Item.uri, Item.file_size, Item.file_mtime_ns)).all()
    assert sorted(recorded) == sorted(
        (uri, Path(uri).stat().st_size, Path(uri).stat().st_mtime_ns) for uri, _, _ in recorded
    )


def test_duplicates_by_content_not_name(tmp_path: Path, store: Store) -> None:
    first = image(tmp_path / "a" / "x.png", 1)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "copy.png").write_bytes(first.read_bytes())
    image(tmp_path / "b" / "other.png", 2)
    report = ingest(store, [tmp_path / "a", tmp_path / "b"], tmp_path / "dl")
    assert (report.added, report.duplicates) == (2, 1)
    again = ingest(store, [tmp_path / "a", tmp_path / "b"], tmp_path / "dl")
    assert (again.added, again.duplicates) == (0, 3)
    assert count(store) == 2


def test_bad_files_are_reported_never_fatal(tmp_path: Path, store: Store) -> None:
    pool = tmp_path / "pool"
    image(pool / "good.png", 1)
    (pool / "empty.jpg").write_bytes(b"")
    truncated = image(tmp_path / "t.jpg", 2, size=(64, 64), fmt="JPEG").read_bytes()
    (pool / "truncated.jpg").write_bytes(truncated[: len(truncated) // 2])
    (pool / "text.png").write_text("hello")
    report = ingest(store, [pool], tmp_path / "dl")
    assert report.added == 1
    reasons = {Path(entry.source).name: entry.reason for entry in report.rejected}
    assert set(reasons) == {"empty.jpg", "truncated.jpg", "text.png"}
    # Reasons a person understands: no Pillow class names, no object addresses.
    assert reasons["text.png"].startswith("not an image") and reasons["empty.jpg"].startswith("not an image")
    assert reasons["truncated.jpg"].startswith("the file is cut short")
    assert not any("0x" in reason or "BytesIO" in reason for reason in reasons.values())
    report.write(tmp_path / "report.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()]
    assert {Path(line["source"]).name for line in lines} == set(reasons)


def test_decompression_bomb_is_rejected(tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    image(tmp_path / "pool" / "small.png", 1, size=(20, 20))
    image(tmp_path / "pool" / "bomb.png", 2, size=(40, 40))  # 1,600 pixels: over the (lowered) limit
    report = ingest(store, [tmp_path / "pool"], tmp_path / "dl")
    assert report.added == 1
    assert "too many pixels" in report.rejected[0].reason


def test_manifests_txt_csv_jsonl_with_row_numbers(tmp_path: Path, store: Store) -> None:
    for number in range(4):
        image(tmp_path / "img" / f"{number}.png", number)
    (tmp_path / "list.txt").write_text("# comment\nimg/0.png\n\nimg/missing.png\n")
    (tmp_path / "list.csv").write_text("uri,label\nimg/1.png,x\n,y\n")
    (tmp_path / "list.jsonl").write_text(
        json.dumps({"path": "img/2.png"})
        + "\n{broken\n"
        + json.dumps({"url": (tmp_path / "img/3.png").as_uri()})
        + "\n"
    )
    report = ingest(store, [tmp_path / "list.txt", tmp_path / "list.csv", tmp_path / "list.jsonl"], tmp_path / "dl")
    assert report.added == 4
    sources = sorted(entry.source for entry in report.rejected)
    assert sources[0] == f"{tmp_path / 'list.csv'}:3"
    assert sources[1] == f"{tmp_path / 'list.jsonl'}:2"
    assert next(entry.reason for entry in report.rejected if entry.source == sources[1]).startswith("not JSON")
    assert sources[2] == f"{tmp_path / 'list.txt'}:4"
    with store.session() as session:
        uris = set(session.scalars(select(Item.uri)))
    assert str(tmp_path / "img" / "3.png") in uris  # file:// URLs are stored as paths


def test_csv_manifest_without_a_path_column_names_the_file(tmp_path: Path, store: Store) -> None:
    (tmp_path / "bad.csv").write_text("name\nx\n")
    with pytest.raises(IngestError, match="bad.csv: a CSV manifest needs a 'uri', 'path' or 'url' column"):
        ingest(store, [tmp_path / "bad.csv"], tmp_path / "dl")
    with pytest.raises(IngestError, match="no such file or folder"):
        ingest(store, [tmp_path / "nowhere"], tmp_path / "dl")


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    image(served / "remote.png", 9)
    (served / "broken.png").write_text("nope")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_urls_are_downloaded_over_real_http(tmp_path: Path, store: Store, http_server: str) -> None:
    manifest = tmp_path / "urls.txt"
    manifest.write_text(f"{http_server}/remote.png\n{http_server}/broken.png\n{http_server}/absent.png\n")
    report = ingest(store, [manifest], tmp_path / "dl")
    assert report.added == 1
    assert len(report.rejected) == 2 and any("404" in entry.reason for entry in report.rejected)
    with store.session() as session:
        uri, size, mtime_ns = session.execute(select(Item.uri, Item.file_size, Item.file_mtime_ns)).one()
    assert uri is not None and Path(uri).parent == tmp_path / "dl" and Path(uri).is_file()
    assert (size, mtime_ns) == (Path(uri).stat().st_size, Path(uri).stat().st_mtime_ns)  # the local copy's


def test_gold_file(tmp_path: Path, store: Store) -> None:
    image(tmp_path / "pool" / "a.png", 1)
    image(tmp_path / "pool" / "b.png", 2)
    ingest(store, [tmp_path / "pool"], tmp_path / "dl")
    gold = tmp_path / "gold.csv"
    gold.write_text("uri,category,label\npool/a.png,cat,yes\npool/b.png,cat,0\n")
    assert ingest_gold(store, gold) == 2
    with store.session() as session:
        assert sorted(session.scalars(select(Gold.answer))) == [0, 1]
    gold.write_text("uri,category,label\npool/a.png,cat,perhaps\n")
    with pytest.raises(IngestError, match=r"gold.csv:2: label 'perhaps'"):
        ingest_gold(store, gold)
    gold.write_text("uri,category,label\npool/zzz.png,cat,1\n")
    with pytest.raises(IngestError, match=r"gold.csv:2: image .*zzz.png is not in the pool"):
        ingest_gold(store, gold)
