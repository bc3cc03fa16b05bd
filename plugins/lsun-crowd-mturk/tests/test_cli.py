"""``lsun-crowd mturk balance | preview | cleanup | workers | run`` on the Stubber-backed fake."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import lsun_crowd_mturk.cli as mturk_cli
import pytest
from fake_turk import FakeTurk
from lsun_crowd_mturk import Api, MTurkCrowd, MTurkSettings
from test_round import make_project
from typer.testing import CliRunner

from lsun_crowd.cli import app
from lsun_crowd.crowd import HitBatch, HitItem, HitSpec
from lsun_crowd.plugins import Plugins
from lsun_crowd.project import Project
from lsun_crowd.render import Renderer
from lsun_crowd.testing import REMOVE, update_project

runner = CliRunner(env={"COLUMNS": "200"})
if not any(group.name == "mturk" for group in app.registered_groups):
    Plugins().add_commands(app)  # what `lsun-crowd` does on start, through the entry point


def mturk_project(directory: Path, prefix: bool = True) -> None:
    """The round tests' project, switched to the mturk adapter and its settings."""
    make_project(directory)
    settings = (
        {"image_root": str((directory / "images").resolve()), "image_url_prefix": "https://images.example.org/digits"}
        if prefix
        else {}
    )
    update_project(
        directory, {"crowd": {"adapter": "mturk", "settings": {"seed": REMOVE, "truth_file": REMOVE, **settings}}}
    )


@pytest.fixture
def turk(monkeypatch: pytest.MonkeyPatch) -> FakeTurk:
    fake = FakeTurk(balance=Decimal("42.50"))

    def open_on_fake(
        settings: MTurkSettings, project: str, live_confirmed: bool = False, templates: Renderer | None = None
    ) -> MTurkCrowd:
        assert live_confirmed == settings.live
        return MTurkCrowd(Api(fake.client, settings, sleep=lambda _: None), settings, project, templates)

    monkeypatch.setattr(mturk_cli, "open_crowd", open_on_fake)
    return fake


def invoke(*args: str, answer: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["mturk", *args], input=answer)
    return result.exit_code, result.output


def test_balance_names_the_mode(tmp_path: Path, turk: FakeTurk) -> None:
    mturk_project(tmp_path / "p")
    code, output = invoke("balance", "--project", str(tmp_path / "p"))
    assert code == 0 and "sandbox (https://mturk-requester-sandbox.us-east-1.amazonaws.com): 42.50 USD" in output


def test_preview_writes_the_hit_mturk_would_show(tmp_path: Path, turk: FakeTurk) -> None:
    mturk_project(tmp_path / "p")
    out = tmp_path / "hit.html"
    code, output = invoke("preview", "--project", str(tmp_path / "p"), "--out", str(out))
    assert code == 0 and "one HIT of 10 images" in output and "of MTurk's 65,535 characters" in output
    html = out.read_text()
    assert html.count('<img src="https://images.example.org/digits/') == 10
    assert 'action="https://workersandbox.mturk.com/mturk/externalSubmit"' in html
    assert "Does the image show: digit-0?" in html
    assert not turk.calls  # a preview costs nothing and asks MTurk nothing


def test_both_previews_show_the_projects_own_template_and_mturks_limit(tmp_path: Path, turk: FakeTurk) -> None:
    mturk_project(tmp_path / "p")
    override = tmp_path / "p" / "hit_templates" / "binary_grid.html"
    override.parent.mkdir()
    override.write_text('{% extends "default:binary_grid.html" %}{% block footer %}<p>ACME-FOOTER</p>{% endblock %}')
    for command in (["mturk", "preview"], ["preview"]):
        out = tmp_path / f"{command[0]}.html"
        result = runner.invoke(app, [*command, "--project", str(tmp_path / "p"), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "<p>ACME-FOOTER</p>" in out.read_text() and 'action="https://workersandbox' in out.read_text()
        size = re.search(
            r"[\d,]+ of (MTurk's|at most) 65,535 characters \(MTurk's HTMLQuestion, sandbox\)", result.output
        )
        assert size, result.output
    assert not turk.calls


def test_preview_of_local_images_says_what_to_set(tmp_path: Path, turk: FakeTurk) -> None:
    mturk_project(tmp_path / "p", prefix=False)
    code, output = invoke("preview", "--project", str(tmp_path / "p"), "--out", str(tmp_path / "hit.html"))
    assert code == 2 and "is not an http(s) URL" in output and "image_url_prefix" in output


def test_cleanup_expires_only_this_projects_orphans(tmp_path: Path, turk: FakeTurk) -> None:
    mturk_project(tmp_path / "p")
    opened = Project.open(tmp_path / "p")
    key = opened.store.project_key("digits-demo")
    opened.close()
    settings = MTurkSettings(image_root="/img", image_url_prefix="https://i.example.org")
    spec = HitSpec("h0", (HitItem("1", "/img/1.png"),))
    # Ours (no job of the store holds it), a same-named project's (another identity), another's.
    for project, batch_id in (
        (key, f"{key}:digit-0:r7"),
        ("digits-demo#0badcafe", "digits-demo#0badcafe:digit-0:r7"),
        ("other", "other:cat:r1"),
    ):
        crowd = MTurkCrowd(Api(turk.client, settings), settings, project)
        crowd.publish(HitBatch(batch_id, "digit-0", "q?", (spec,), 3, Decimal("0.02")))
    ours = next(hit for hit, row in turk.hits.items() if row["RequesterAnnotation"].startswith(f"{key}:"))
    code, output = invoke("cleanup", "--project", str(tmp_path / "p"), "--delete")
    assert code == 0 and f"1 HIT(s) of {key} cleaned up" in output and "expired and deleted" in output
    assert turk.hits[ours]["HITStatus"] == "Disposed"
    assert [row["HITStatus"] for hit, row in turk.hits.items() if hit != ours] == ["Assignable", "Assignable"]
    code, output = invoke("cleanup", "--project", str(tmp_path / "p"))
    assert code == 0 and "no HITs of" in output  # a deleted HIT is gone from ListHITs, as on MTurk


def test_live_runs_need_a_yes_that_shows_the_spend(tmp_path: Path, turk: FakeTurk) -> None:
    mturk_project(tmp_path / "p")
    code, output = invoke("run", "--project", str(tmp_path / "p"), "--live", answer="n\n")
    assert code == 1 and "LIVE Mechanical Turk and may spend up to 500 USD of real money" in output
    assert not turk.calls
    # The plain run command serves live mode too: it shows the most it may spend and asks first.
    update_project(tmp_path / "p", {"crowd": {"settings": {"live": True}}})
    result = runner.invoke(app, ["run", "--project", str(tmp_path / "p")], input="n\n")
    assert result.exit_code == 2, result.output
    shown = " ".join(result.output.split())
    assert (
        "live Mechanical Turk (AWS closed Mechanical Turk on 30 September 2026; a live request may fail): "
        "real money: this run may spend up to 500 USD more (the budget left)"
    ) in shown
    assert "nothing was published: the spend was not confirmed" in shown
    assert not turk.calls


def test_workers_lists_and_blocks(tmp_path: Path, turk: FakeTurk) -> None:
    mturk_project(tmp_path / "p")
    code, output = invoke("workers", "--project", str(tmp_path / "p"), "--block", "A9SPAMMER", "--reason", "spam")
    assert code == 0 and "A9SPAMMER: blocked (soft)" in output
    assert any(name == "AssociateQualificationWithWorker" for name, _ in turk.calls)
