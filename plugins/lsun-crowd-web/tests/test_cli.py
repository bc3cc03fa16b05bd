"""``lsun-crowd serve --add-annotator NAME`` makes a personal link whose token the server accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from lsun_crowd_web import WebState
from starlette.testclient import TestClient
from typer.testing import CliRunner

from lsun_crowd.cli import app
from lsun_crowd.config import CONFIG_FILE
from lsun_crowd.plugins import Plugins

if not any(
    command.name == "serve" or getattr(command.callback, "__name__", "") == "serve"
    for command in app.registered_commands
):
    Plugins().add_commands(app)  # what `lsun-crowd` does on start, through the entry point


def test_add_annotator_prints_a_link_with_a_fresh_secret(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text('[project]\nname = "team"\ncategories = ["cat"]\n[crowd]\nadapter = "web"\n')
    runner = CliRunner(env={"COLUMNS": "200"})
    links = []
    for _ in range(2):
        result = runner.invoke(app, ["serve", "--project", str(tmp_path), "--add-annotator", "ana", "--port", "9001"])
        assert result.exit_code == 0, result.output
        (link,) = re.findall(r"http://127\.0\.0\.1:9001/a/(\S+)", result.output)
        links.append(link)
    state = WebState(tmp_path / "web-crowd.sqlite")
    assert links[0] != links[1]
    assert state.annotator(links[1]) == "ana" and state.annotator(links[0]) is None  # a new link replaces the old
    raw = (tmp_path / "web-crowd.sqlite").read_bytes()
    assert links[1].encode() not in raw  # only the token's hash is stored


def test_serve_applies_the_projects_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = "max_body_bytes = 100\nfailed_token_limit = 2\nfailed_token_window_seconds = 60\n"
    (tmp_path / CONFIG_FILE).write_text(
        '[project]\nname = "team"\ncategories = ["cat"]\n[crowd]\nadapter = "web"\n[crowd.settings]\n' + settings
    )
    served: list[Any] = []
    monkeypatch.setattr("uvicorn.run", lambda served_app, **options: served.append(served_app))
    result = CliRunner().invoke(app, ["serve", "--project", str(tmp_path)])
    assert result.exit_code == 0, result.output
    token = WebState(tmp_path / "web-crowd.sqlite").add_annotator("ana")
    client = TestClient(served[0])
    assert client.post(f"/a/{token}/submit/x", content=b"a" * 101).status_code == 413
    assert client.get(f"/a/{token}").headers["x-frame-options"] == "DENY"
    assert [client.get("/a/wrong").status_code for _ in range(3)] == [401, 401, 429]
    (tmp_path / CONFIG_FILE).write_text(
        '[project]\nname = "team"\ncategories = ["cat"]\n[crowd]\nadapter = "web"\n[crowd.settings]\n'
        "max_body_bytes = 0\n"
    )
    refused = CliRunner().invoke(app, ["serve", "--project", str(tmp_path)])
    assert refused.exit_code == 2 and "max_body_bytes" in refused.output and "Traceback" not in refused.output
