"""``lsun-crowd serve --add-annotator NAME`` makes a personal link whose token the server accepts."""

from __future__ import annotations

import re
from pathlib import Path

from lsun_crowd_web import WebState
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
