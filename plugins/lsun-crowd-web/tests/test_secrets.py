"""A whole cascade on the web crowd, with marker AWS credentials in the environment and three
annotators whose secret links are known, answering over real HTTP through a server that logs
every request: afterwards no marker and no annotator token is found in any file the project
wrote (databases, caches, models, logs, reports) or in anything printed."""

from __future__ import annotations

import logging
import logging.config
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from live_server import LiveServer
from lsun_crowd_web import WebCrowd
from lsun_crowd_web.cli import serve
from lsun_crowd_web.server_logging import server_log_config

from lsun_crowd.project import Project
from lsun_crowd.redact import REDACTED, redact_logging
from lsun_crowd.testing import REMOVE, digits_project

ANNOTATORS = ("ana", "ben", "cho")
KEY_ID = "AKIAMARKERKEY00ID789"
SECRET = "marker-secret/Zq8r+Xw2Lk5Jm1Nb0Vc7Hy3Gt6Fd4S"
SESSION_TOKEN = "marker-session-FwoGZXIvYXdzEJr//////////wEaDOk"
ACTION = re.compile(r'action="/a/[^/"]+/submit/([^"]+)"')
FORM_TOKEN = re.compile(r'<input type="hidden" name="form_token" value="([^"]+)">')


def _log_to(config: dict[str, object], path: Path) -> dict[str, object]:
    """``serve``'s logging configuration, with its handlers writing to ``path`` instead of a terminal."""
    handlers = config["handlers"]
    assert isinstance(handlers, dict)
    for handler in handlers.values():
        handler.pop("stream")
        handler.update({"class": "logging.FileHandler", "filename": str(path), "encoding": "utf-8"})
    return config


def _answer_over_http(server: LiveServer, web: WebCrowd, tokens: dict[str, str], targets: np.ndarray) -> int:
    """Each annotator opens their link, looks at the first image, and submits every HIT they are
    shown, truthfully, as a browser would post the form; returns the HITs submitted."""
    submitted = 0
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=10) as browser:
        for token in tokens.values():
            while True:
                page = browser.get(f"/a/{token}")
                assert page.status_code == 200
                action = ACTION.search(page.text)
                if action is None:
                    break  # the idle page: nothing left for this annotator
                hit = web.state.hit(action.group(1))
                assert hit is not None
                assert browser.get(f"/a/{token}/image/{hit.hit_id}/{hit.items[0].item_key}").status_code == 200
                digit = int(hit.category.removeprefix("digit-"))
                fields = {
                    f"item-{item.item_key}": "yes" if targets[int(Path(item.uri).stem)] == digit else "no"
                    for item in hit.items
                }
                form_token = FORM_TOKEN.search(page.text)
                assert form_token is not None
                answer = browser.post(
                    f"/a/{token}/submit/{hit.hit_id}",
                    data={"form_token": form_token.group(1), **fields},
                    headers={"Origin": server.url},
                )
                assert answer.status_code == 303, answer.text
                submitted += 1
        assert browser.get("/a/not-a-token-but-long-enough").status_code == 401
    return submitted


def test_a_cascade_leaves_no_credential_or_annotator_token_in_any_file_or_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    directory = tmp_path / "project"
    crowd_settings = {"adapter": "web", "poll_seconds": 0, "settings": {"seed": REMOVE, "truth_file": REMOVE}}
    overrides = {"crowd": crowd_settings, "cascade": {"max_rounds": 1}, "repair": {"enabled": False}}
    targets = digits_project(directory, limit=100, digits=range(2), seed=5, sample_per_round=24, overrides=overrides)
    project = Project.open(directory)
    web = project.crowd()
    assert isinstance(web, WebCrowd)
    tokens = {name: web.state.add_annotator(name) for name in ANNOTATORS}
    served_log = directory / "serve.log"
    server = LiveServer(web.state, log_config=_log_to(server_log_config(), served_log), log_level="info")
    core_log = logging.FileHandler(directory / "lsun-crowd.log", encoding="utf-8")
    redact_logging(core_log)  # what the command line's logging set-up installs
    root = logging.getLogger()
    level = root.level
    submitted = passes = 0
    with server:
        root.addHandler(core_log)
        root.setLevel(logging.INFO)
        try:
            cascade = project.cascade(web)
            chatter = logging.getLogger("lsun_crowd.tests")  # a plugin careless with what it logs
            while passes < 50:
                passes += 1
                chatter.info("annotator links: %s", [f"/a/{token}" for token in tokens.values()])
                chatter.warning("environment key %s", KEY_ID)
                if all(outcome.reason != "running" for outcome in cascade.run(once=True)):
                    break
                submitted += _answer_over_http(server, web, tokens, targets)
        finally:
            root.removeHandler(core_log)
            root.setLevel(level)
            core_log.close()
            project.close()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.flush()
    printed = capfd.readouterr()

    assert 1 < passes < 50 and submitted >= 2
    served = served_log.read_text(encoding="utf-8")
    assert served.count(f"/a/{REDACTED}/submit/") == submitted  # every request was logged, redacted
    assert served.count(f"/a/{REDACTED}/image/") == submitted and f'"GET /a/{REDACTED} HTTP/1.1" 200' in served
    assert f"environment key {REDACTED}" in (directory / "lsun-crowd.log").read_text(encoding="utf-8")
    secrets = {KEY_ID: "AWS key id", SECRET: "AWS secret", SESSION_TOKEN: "AWS session token", "MARKER": "marker"}
    secrets |= {token: f"{name}'s token" for name, token in tokens.items()}
    written = {path: path.read_bytes() for path in directory.rglob("*") if path.is_file()}
    written[Path("<stdout>")] = printed.out.encode()
    written[Path("<stderr>")] = printed.err.encode()
    assert any(path.suffix == ".sqlite" for path in written) and len(written) > 10
    leaks = [
        f"{path.relative_to(directory) if path.is_absolute() else path}: {what}"
        for path, content in written.items()
        for secret, what in secrets.items()
        if secret.encode() in content or secret.lower().encode() in content
    ]
    assert not leaks


def test_serve_logs_through_the_redacting_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "lsun-crowd.toml").write_text(
        '[project]\nname = "team"\ncategories = ["cat"]\n[crowd]\nadapter = "web"\n'
    )
    served: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: served.append(options))
    serve(project=tmp_path, host="127.0.0.1", port=8765, add_annotator=None)
    (options,) = served
    assert options["log_config"] == server_log_config()
    logging.config.dictConfig(options["log_config"])  # what uvicorn does with it
    token = "Zk3l9_Qx-AbCdEfGhIjKlMnOpQrStUv"
    access = ("127.0.0.1:5000", "POST", f"/a/{token}/submit/WEB1", "1.1", 303)
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', *access)
    logging.getLogger("uvicorn.error").error("Exception in ASGI application at /a/%s", token)
    printed = capsys.readouterr()
    assert f'"POST /a/{REDACTED}/submit/WEB1 HTTP/1.1" 303' in printed.out
    assert f"Exception in ASGI application at /a/{REDACTED}" in printed.err
    assert token not in printed.out + printed.err
