"""Hostile input to ingest: each bad manifest line, link or URL is one rejection naming the file
and line (or the path, or the URL), and every valid entry beside it is stored."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from lsun_crowd.cli import app
from lsun_crowd.config import CONFIG_FILE
from lsun_crowd.downloads import DownloadLimits
from lsun_crowd.ingest import ingest
from lsun_crowd.schema import Item
from lsun_crowd.store import Store

runner = CliRunner(env={"COLUMNS": "200"})


def png(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(6, 8, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def stored(store: Store) -> set[str]:
    with store.session() as session:
        return {Path(uri).name for uri in session.scalars(select(Item.uri))}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.for_project(tmp_path)


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    for number in range(3):
        png(tmp_path / "img" / f"{number}.png", number)
    return tmp_path / "img"


def rejections(store: Store, manifest: Path, tmp_path: Path) -> dict[str, str]:
    report = ingest(store, [manifest], tmp_path / "dl")
    return {entry.source: entry.reason for entry in report.rejected}


def test_malformed_url_line_is_one_rejection(tmp_path: Path, store: Store, pictures: Path) -> None:
    manifest = tmp_path / "list.txt"
    manifest.write_text("img/0.png\nhttp://[::1/broken.png\nimg/1.png\nhttp://host:99999999/x.png\nimg/2.png\n")
    rejected = rejections(store, manifest, tmp_path)
    assert set(rejected) == {f"{manifest}:2", f"{manifest}:4"}
    assert rejected[f"{manifest}:2"].startswith("not a valid URL")
    assert stored(store) == {"0.png", "1.png", "2.png"}


def test_non_utf8_and_nul_lines_are_rejections(tmp_path: Path, store: Store, pictures: Path) -> None:
    manifest = tmp_path / "list.txt"
    manifest.write_bytes(b"\xef\xbb\xbfimg/0.png\nimg/\xff.png\nimg/1.png\nimg/\x00.png\nimg/2.png\n")  # with a BOM
    rejected = rejections(store, manifest, tmp_path)
    assert rejected == {
        f"{manifest}:2": "not UTF-8 text (byte 0xff at column 5)",
        f"{manifest}:4": "path or URL holds a NUL character",
    }
    assert stored(store) == {"0.png", "1.png", "2.png"}


def test_deeply_nested_jsonl_line_is_one_rejection(tmp_path: Path, store: Store, pictures: Path) -> None:
    manifest = tmp_path / "list.jsonl"
    lines = [json.dumps({"path": "img/0.png"}), "[" * 100_000, json.dumps({"uri": "img/1.png"}), '{"path": 3}']
    manifest.write_text("\n".join(lines) + "\n" + json.dumps({"url": "img/2.png"}) + "\n")
    rejected = rejections(store, manifest, tmp_path)
    assert set(rejected) == {f"{manifest}:2", f"{manifest}:4"}
    assert rejected[f"{manifest}:2"] in {"JSON nested too deeply", "not JSON: Expecting value (column 100001)"}
    assert stored(store) == {"0.png", "1.png", "2.png"}


def test_over_long_csv_field_is_one_rejection(tmp_path: Path, store: Store, pictures: Path) -> None:
    manifest = tmp_path / "list.csv"
    long_path = "img/" + "a" * 200_000 + ".png"
    manifest.write_text(
        f"\ufeffLabel, URI\nx,img/0.png\ny,{long_path}\nz,img/1.png\nw,img/{'b' * 5000}.png\nv,img/2.png\n"
    )
    rejected = rejections(store, manifest, tmp_path)
    assert set(rejected) == {f"{manifest}:3", f"{manifest}:5"}
    assert "field larger than field limit" in rejected[f"{manifest}:3"]
    assert rejected[f"{manifest}:5"] == "path or URL longer than 4,096 characters"
    assert stored(store) == {"0.png", "1.png", "2.png"}


def test_over_long_txt_line_is_one_rejection_and_never_held_whole(tmp_path: Path, store: Store, pictures: Path) -> None:
    manifest = tmp_path / "list.txt"
    manifest.write_bytes(b"img/0.png\n" + b"x" * (3 << 20) + b"\nimg/1.png\n")
    rejected = rejections(store, manifest, tmp_path)
    assert rejected == {f"{manifest}:2": "line longer than 1,048,576 bytes"}
    assert stored(store) == {"0.png", "1.png"}


def test_tilde_paths_expand_and_unknown_users_are_rejected(
    tmp_path: Path, store: Store, pictures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "img"))
    manifest = tmp_path / "list.txt"
    manifest.write_text("~/0.png\n~no-such-user-here/1.png\nimg/2.png\n")
    rejected = rejections(store, manifest, tmp_path)
    assert rejected == {f"{manifest}:2": "cannot expand ~no-such-user-here: no such user"}
    assert stored(store) == {"0.png", "2.png"}


def test_links_loops_and_dangling_are_reported(tmp_path: Path, store: Store) -> None:
    pool = tmp_path / "pool"
    png(pool / "real.png", 1)
    outside = png(tmp_path / "elsewhere" / "out.png", 2)
    os.symlink(outside, pool / "to-outside.png")  # a file link leaving the folder: followed
    os.symlink("loop.png", pool / "loop.png")
    os.symlink("gone.png", pool / "dangling.png")
    os.symlink(tmp_path / "elsewhere", pool / "folder-link")  # a folder link: reported, not followed
    report = ingest(store, [pool], tmp_path / "dl")
    reasons = {Path(entry.source).name: entry.reason for entry in report.rejected}
    assert reasons == {
        "loop.png": "symbolic link loop",
        "dangling.png": "dangling symbolic link (to gone.png, which does not exist)",
        "folder-link": f"a link to the folder {tmp_path / 'elsewhere'}: not followed (name that folder to ingest it)",
    }
    assert report.added == 2
    with store.session() as session:
        assert set(session.scalars(select(Item.uri))) == {str(pool / "real.png"), str(outside)}


class Trickle(http.server.BaseHTTPRequestHandler):
    """Claims 1,000 bytes and sends one every 0.1 s (a socket timeout never fires)."""

    def do_GET(self) -> None:
        if self.path.startswith("/big"):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()  # no Content-Length: the limit must hold while reading
            try:
                for _ in range(64):
                    self.wfile.write(b"\0" * 4096)
            except OSError:
                pass
            return
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_trickling_and_oversized_urls_are_rejected_by_line(
    tmp_path: Path, store: Store, pictures: Path, hostile_server: str
) -> None:
    manifest = tmp_path / "urls.txt"
    manifest.write_text(f"img/0.png\n{hostile_server}/slow.png\n{hostile_server}/big.png\nimg/1.png\n")
    started = time.monotonic()
    report = ingest(store, [manifest], tmp_path / "dl", DownloadLimits(deadline_seconds=1.0, max_bytes=100_000))
    took = time.monotonic() - started
    assert took < 5  # the trickle alone would take 100 s
    rejected = {entry.source: entry.reason for entry in report.rejected}
    assert set(rejected) == {f"{manifest}:2", f"{manifest}:3"}
    assert f"{hostile_server}/slow.png: not downloaded within 1 s" in rejected[f"{manifest}:2"]
    assert f"{hostile_server}/big.png: larger than 100,000 bytes" in rejected[f"{manifest}:3"]
    assert stored(store) == {"0.png", "1.png"}


def test_declared_size_over_the_limit_is_refused_before_reading(
    tmp_path: Path, store: Store, hostile_server: str
) -> None:
    manifest = tmp_path / "urls.txt"
    manifest.write_text(f"{hostile_server}/slow.png\n")
    started = time.monotonic()
    report = ingest(store, [manifest], tmp_path / "dl", DownloadLimits(deadline_seconds=30.0, max_bytes=999))
    assert time.monotonic() - started < 2  # Content-Length: 1000 is refused at once, not after 100 s
    assert [entry.reason for entry in report.rejected] == [
        f"{hostile_server}/slow.png: larger than 999 bytes (ingest.max_download_bytes)"
    ]


def test_cli_prints_file_line_reason_and_exits_1(tmp_path: Path, pictures: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("")
    manifest = tmp_path / "list.txt"
    manifest.write_bytes(b"img/0.png\nhttp://[::1/x.png\nimg/\xfe.png\nimg/1.png\n")
    result = runner.invoke(app, ["ingest", "--project", str(tmp_path), str(manifest)])
    assert result.exit_code == 1, result.output
    assert f"{manifest}:2: not a valid URL: Invalid IPv6 URL\n" in result.stderr
    assert f"{manifest}:3: not UTF-8 text (byte 0xfe at column 5)\n" in result.stderr
    assert "Traceback" not in result.output
    assert "added 2 image(s), skipped 0 duplicate(s), rejected 2" in result.stdout
    with Store.for_project(tmp_path).session() as session:
        assert session.scalar(select(func.count(Item.id))) == 2
    clean = tmp_path / "clean.txt"
    clean.write_text("img/2.png\n")
    assert runner.invoke(app, ["ingest", "--project", str(tmp_path), str(clean)]).exit_code == 0
