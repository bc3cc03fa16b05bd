"""Pretrained weights downloaded once into torch's cache, checked, and never fetched offline: against
a local HTTP server (no test touches the network)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from lsun_crowd import backbones
from lsun_crowd import weights as weights_module
from lsun_crowd.cli import app
from lsun_crowd.embed import EmbeddingError
from lsun_crowd.testing import edit_init_config

runner = CliRunner(env={"COLUMNS": "200"})


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` by name; ``drops`` counts requests for a name to cut off midway first."""

    files: ClassVar[dict[str, bytes]] = {}
    drops: ClassVar[dict[str, int]] = {}
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        self.requests.append(name)
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.drops.get(name, 0) > 0:
            self.drops[name] -= 1
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops a third of the way in
            return
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Files.files, _Files.drops, _Files.requests = {}, {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv(weights_module.OFFLINE_ENV, raising=False)
    return home


def _checkpoint(state: dict[str, torch.Tensor], stem: str) -> tuple[str, bytes]:
    """A checkpoint's bytes and its torchvision-style name, which carries its checksum's first digits."""
    path = Path(f"/tmp/{stem}-{threading.get_ident()}.pth")
    torch.save(state, path)
    body = path.read_bytes()
    path.unlink()
    return f"{stem}-{hashlib.sha256(body).hexdigest()[:8]}.pth", body


def test_a_checkpoint_downloads_once_into_torchs_cache_with_its_checksum_checked(server: str) -> None:
    name, body = _checkpoint({"w": torch.arange(1000.0)}, "small")
    _Files.files[name] = body
    path = weights_module.fetch(f"{server}/{name}")
    assert path == Path(torch.hub.get_dir()) / "checkpoints" / name and path.read_bytes() == body
    assert torch.equal(weights_module.load(path)["w"], torch.arange(1000.0))
    assert weights_module.fetch(f"{server}/{name}") == path and _Files.requests == [name]  # once


def test_a_bad_checksum_keeps_nothing_and_says_so(server: str) -> None:
    name, body = _checkpoint({"w": torch.ones(10)}, "small")
    _Files.files[name] = body[:-1] + bytes([body[-1] ^ 1])  # one bit flipped on the way
    with pytest.raises(EmbeddingError, match=r"SHA-256 does not start with [0-9a-f]{8} .*not kept") as raised:
        weights_module.fetch(f"{server}/{name}")
    assert "\n" not in str(raised.value)
    assert list((Path(torch.hub.get_dir()) / "checkpoints").iterdir()) == []


def test_a_dropped_connection_is_retried_and_a_dead_one_named(server: str) -> None:
    name, body = _checkpoint({"w": torch.ones(5000)}, "small")
    _Files.files[name] = body
    _Files.drops[name] = 1
    assert weights_module.fetch(f"{server}/{name}").read_bytes() == body
    assert _Files.requests == [name, name]
    other, body = _checkpoint({"w": torch.zeros(5000)}, "other")
    _Files.files[other] = body
    _Files.drops[other] = weights_module.ATTEMPTS
    with pytest.raises(EmbeddingError, match=f"could not download {server}/{other} .*copy it to"):
        weights_module.fetch(f"{server}/{other}")
    assert not (Path(torch.hub.get_dir()) / "checkpoints" / other).exists()


def test_offline_nothing_is_downloaded_and_the_error_says_what_to_copy_where(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, body = _checkpoint({"w": torch.ones(3)}, "small")
    _Files.files[name] = body
    target = Path(torch.hub.get_dir()) / "checkpoints" / name
    with pytest.raises(EmbeddingError, match=f"downloads are off .*copy {server}/{name} to {target}"):
        weights_module.fetch(f"{server}/{name}", offline_setting=True)
    monkeypatch.setenv(weights_module.OFFLINE_ENV, "1")
    with pytest.raises(EmbeddingError, match="downloads are off"):
        weights_module.fetch(f"{server}/{name}")
    assert _Files.requests == []


def _digit_pool(directory: Path, count: int) -> Path:
    """``count`` digit scans as PNGs and the simulated crowd's truth for one category."""
    digits = load_digits()
    images = directory / "images"
    images.mkdir(parents=True)
    lines = ["uri,category,label"]
    for index in range(count):
        path = images / f"{index:03d}.png"
        Image.fromarray((digits.images[index] * 16).astype(np.uint8)).convert("RGB").save(path)
        lines.append(f"{path},zero,{int(digits.target[index] == 0)}")
    (directory / "truth.csv").write_text("\n".join(lines) + "\n")
    return images


def _new_project(directory: Path, images: Path) -> None:
    assert runner.invoke(app, ["init", str(directory)]).exit_code == 0
    edit_init_config(
        directory,
        {
            "categories = []": 'categories = ["zero"]',
            "poll_seconds = 30": "poll_seconds = 0",
            "[crowd.settings]": f'[crowd.settings]\ntruth_file = "{images.parent / "truth.csv"}"',
        },
    )
    result = runner.invoke(app, ["ingest", "--project", str(directory), str(images)])
    assert result.exit_code == 0, result.output


def test_inits_defaults_run_first_with_a_download_then_offline_from_the_cache(
    tmp_path: Path, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchvision's resnet18 (the default backbone) at its default weights, served from here: a
    # freshly initialised network stands in for ImageNet's, under a name carrying its own checksum.
    name, body = _checkpoint(torchvision.models.resnet18().state_dict(), "resnet18")
    _Files.files[name] = body
    monkeypatch.setattr(backbones, "weights_url", lambda weights: f"{server}/{name}")
    images = _digit_pool(tmp_path / "pool", 24)
    _new_project(tmp_path / "first", images)
    result = runner.invoke(app, ["run", "--project", str(tmp_path / "first")])
    assert result.exit_code == 0, result.output
    assert _Files.requests == [name]
    assert (Path(torch.hub.get_dir()) / "checkpoints" / name).read_bytes() == body
    # A second project, offline: the cached copy serves it, and nothing is asked of the server.
    monkeypatch.setenv(weights_module.OFFLINE_ENV, "1")
    _new_project(tmp_path / "second", images)
    result = runner.invoke(app, ["run", "--project", str(tmp_path / "second")])
    assert result.exit_code == 0, result.output
    assert _Files.requests == [name]
    # Offline with an empty cache: one line naming the file to copy and where.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-home"))
    _new_project(tmp_path / "third", images)
    result = runner.invoke(app, ["run", "--project", str(tmp_path / "third")])
    assert result.exit_code != 0
    assert f"copy {server}/{name} to {tmp_path / 'empty-home'}" in " ".join(result.output.split())
    assert "Traceback" not in result.output
