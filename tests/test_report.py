"""``lsun-crowd report`` on a finished digits project: every section, every figure, escaped
project text, an empty store, a bad ``--out``, and the page in a real browser (Debian's chromium
driven by Playwright) with every image loaded and a screenshot in the test artifacts."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from lsun_crowd import ledger
from lsun_crowd.cli import app
from lsun_crowd.project import Project
from lsun_crowd.report import write_report
from lsun_crowd.report.gather import gather
from lsun_crowd.report.scores import pool_sample
from lsun_crowd.schema import (
    Audit,
    AuditResult,
    Category,
    Job,
    Label,
    LabelEvent,
    LabelSource,
    Repair,
    RepairPass,
    Round,
    RoundTest,
    Spend,
    Worker,
)
from lsun_crowd.testing import digits_config, update_project, write_project

from .conftest import make_digits_project

REQUIRED = os.environ.get("LSUN_CROWD_REQUIRE_BROWSER") == "1"  # CI: a missing browser is a failure
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("LSUN_CROWD_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
HOSTILE_CATEGORY = '<img src=x onerror="alert(1)">$x$ & co'
HOSTILE_WORKER = "<b>worker</b>&'\""
runner = CliRunner(env={"COLUMNS": "200"})
# A smaller head and two folds for the repair pass: the report needs a finished project, not a good one.
LIGHT = {"model": {"epochs": 40, "hidden_units": 32}, "repair": {"enabled": True, "folds": 2}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two digits run to the end with the simulated crowd (about ten seconds), shared by the module."""
    directory = tmp_path_factory.mktemp("report") / "project"
    make_digits_project(directory, limit=400, sample=100, overrides=LIGHT)
    project = Project.open(directory)
    try:
        project.cascade(project.crowd()).run()
    finally:
        project.close()
    return directory


@pytest.fixture(scope="module")
def annotated(finished: Path) -> Iterator[Path]:
    """A copy of the finished project with hostile names, a recorded guarantee for one round, a
    repair and an audit, as the guarantee, repair and audit steps store them."""
    directory = finished.parent / "annotated"
    shutil.copytree(finished, directory)
    project = Project.open(directory)
    with project.store.session() as session:
        session.execute(update(Category).where(Category.id == 1).values(name=HOSTILE_CATEGORY))
        session.execute(update(Worker).where(Worker.id == 1).values(platform_worker_id=HOSTILE_WORKER, blocked=True))
        split = session.scalars(select(Round).where(Round.category_id == 1, Round.human_only.is_(False))).first()
        assert split is not None
        session.merge(
            RoundTest(
                round_id=split.id, side="positive", mode="ltt", threshold=2.5, target=0.97, delta=0.025,
                calibration_size=60, unresolved=1, tested=20, errors=0, p_value=0.0012, bound=0.981, labeled=123,
            )
        )  # fmt: skip
        repair_pass = RepairPass(category_id=1, state="done", scored=80, flagged=3)
        session.add(repair_pass)
        session.flush()
        for item, given, new, state in ((1, 1, 0, "changed"), (2, 0, 0, "kept"), (3, 1, None, "sent")):
            session.add(
                Repair(
                    pass_id=repair_pass.id, item_id=item, category_id=1, score=0.9, given_label=given,
                    new_label=new, state=state,
                )
            )  # fmt: skip
        audit = Audit(sample_size=300, seed=0, votes_per_item=3, alpha=0.05, state="done")
        session.add(audit)
        session.flush()
        for category, metric, estimate in ((None, "precision", 0.98), (1, "precision", 0.97), (2, "npv", 0.99)):
            session.add(
                AuditResult(
                    audit_id=audit.id, category_id=category, stratum="all", metric=metric, n=150, estimate=estimate,
                    exact_low=estimate - 0.04, exact_high=estimate + 0.01, ppi_low=estimate - 0.02,
                    ppi_high=estimate + 0.005,
                )
            )  # fmt: skip
        session.add(LabelEvent(item_id=1, category_id=2, label=0, source="human", origin="conflict:99", confidence=1.0))
    try:
        write_report(project, directory / "report")
    finally:
        project.close()
    yield directory / "report"


def image_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', page)


def test_report_of_a_finished_project_has_every_section_and_figure(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", "--project", str(finished), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text(encoding="utf-8")
    for section in ("Resolved and unlabeled per round", "Scores and thresholds", "Guarantee per round",
                    "Votes and money per round", "Worker quality", "Label repairs", "Audit"):  # fmt: skip
        assert f">{section}</h2>" in page
    sources = image_sources(page)
    # Labels and scores per category, work, workers: no audit in this store.
    per_category = [f"plots/{kind}-{category}.png" for kind in ("labels", "scores") for category in (1, 2)]
    assert sorted(sources) == sorted([*per_category, "plots/work.png", "plots/workers.png"])
    for source in sources:
        assert (out / source).stat().st_size > 2_000
        assert (out / source).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Nothing from outside the folder: no scripts, style sheets, fonts or absolute links.
    assert not re.search(r"https?:|<script|<link|@import|url\(", page)
    assert "No audit yet." in page
    project = Project.open(finished)
    with project.store.session() as session:
        recorded = {round_id for round_id in session.scalars(select(RoundTest.round_id))}
        unrecorded = session.scalars(
            select(Round.id).where(Round.state == "done", Round.human_only.is_(False), Round.id.notin_(recorded))
        ).all()
    assert ("not recorded" in page) == bool(unrecorded)
    # Per round, what was resolved adds up to today's labels, and the last round leaves what is unlabeled now.
    data = gather(project.store, [])
    for totals in data.categories:
        rounds = [row for row in data.rounds if row.category_id == totals.category_id]
        assert rounds[-1].unlabeled_after == totals.unlabeled
        assert sum(row.resolved for row in rounds) <= totals.positive + totals.negative
        assert sum(row.human_positive + row.model_positive for row in rounds) <= totals.positive
    project.close()


def test_project_text_is_escaped_and_every_recorded_table_is_shown(annotated: Path) -> None:
    page = (annotated / "index.html").read_text(encoding="utf-8")
    assert HOSTILE_CATEGORY not in page and "<b>worker" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;$x$ &amp; co" in page
    assert "&lt;b&gt;worker&lt;/b&gt;&amp;&#x27;&quot;" in page
    assert image_sources(page).count("plots/audit.png") == 1
    assert "0.0012" in page and "0.981" in page  # the recorded test of one round
    # The pass added above (80 scored, one label changed) is counted with any the run made itself.
    assert "No repairs." not in page and "<th>changed</th>" in page and "<th>scored</th>" in page
    assert "No audit yet." not in page and ">overall<" in page and "Intervals at 95%" in page
    assert ">conflict<" in page


def test_a_store_without_rounds_gives_a_report_that_says_so(tmp_path: Path) -> None:
    write_project(tmp_path / "project", digits_config(digits=range(2)))
    project = Project.open(tmp_path / "project")
    written = write_report(project, tmp_path / "report")
    project.close()
    page = written.index.read_text(encoding="utf-8")
    assert written.figures == 0 and image_sources(page) == []
    assert "No category has started yet" in page and "No rounds yet." in page and "No audit yet." in page
    assert "No repairs." in page and "No worker has worked yet." in page


def test_scores_say_why_when_the_backbone_cannot_be_built(finished: Path, tmp_path: Path) -> None:
    directory = tmp_path / "project"
    shutil.copytree(finished, directory)
    update_project(directory, {"model": {"backbone": "no-such-backbone"}})
    project = Project.open(directory)
    written = write_report(project, tmp_path / "report")
    project.close()
    page = written.index.read_text(encoding="utf-8")
    assert "the scores cannot be shown" in page and "no-such-backbone" in page
    assert "plots/scores-" not in page and "plots/labels-1.png" in page


def test_a_bad_out_is_named_without_a_traceback(finished: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for out, message in ((a_file, "is a file, not a directory"), (a_file / "below", "cannot create the directory")):
        result = runner.invoke(app, ["report", "--project", str(finished), "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = runner.invoke(app, ["report", "--project", str(finished), "--out", str(locked)])
        assert result.exit_code == 2 and "not writable" in result.output


def test_thepool_sample_is_bounded(finished: Path) -> None:
    project = Project.open(finished)
    sample = list(pool_sample(project.store, 50, seed=0))
    project.close()
    assert 0 < len(sample) <= 50 and len(set(sample)) == len(sample)


def test_the_report_opens_in_a_browser_with_every_image_loaded(annotated: Path) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip("Playwright's Python client is not installed (pip install playwright)")
    if CHROMIUM is None:
        if REQUIRED:
            raise AssertionError("no chromium on PATH: apt-get install chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        failed: list[str] = []
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.goto((annotated / "index.html").resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "nodes => nodes.map(n => [n.getAttribute('src'), n.complete, n.naturalWidth])"
        )
        assert len(images) >= 7
        assert [src for src, complete, width in images if not complete or width <= 0] == []
        assert failed == []
        assert page.title().endswith("lsun-crowd report")
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert screenshot.stat().st_size > 20_000


def test_status_the_report_and_the_store_agree_on_money_to_the_cent(finished: Path, tmp_path: Path) -> None:
    # A finished project (its rounds, follow-ups and certifications), a repair and then an audit.
    directory = tmp_path / "audited"
    shutil.copytree(finished, directory)
    _plant_wrong_human_labels(directory, count=3)  # its own repair pass found nothing to ask about
    result = runner.invoke(app, ["repair", "--project", str(directory)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["audit", "--project", str(directory), "--sample", "20"])
    assert result.exit_code == 0, result.output
    project = Project.open(directory)
    with project.store.session() as session:
        kinds = set(session.scalars(select(Job.kind).join(Spend, Spend.job_id == Job.id)))
        store = session.scalar(select(func.sum(Spend.amount)))
    project.close()
    assert {"round", "follow_up", "repair", "audit"} <= kinds
    from lsun_crowd import cli as cli_module

    cli_module.console.width = 200  # measured at import, perhaps in a narrow terminal: read at full width
    status = runner.invoke(app, ["status", "--project", str(directory)])
    total = re.search(r"in all\W.*?(\d+)\D+?([\d.]+)\W*$", status.output, re.MULTILINE)
    assert total is not None, status.output
    report = runner.invoke(app, ["report", "--project", str(directory), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    in_all = re.search(r"In all: \d+ votes, ([\d.]+) USD", page)
    assert in_all is not None
    cents = Decimal(store).quantize(Decimal("0.01"))
    assert Decimal(total.group(2)) == Decimal(in_all.group(1)) == cents


def _plant_wrong_human_labels(directory: Path, count: int) -> None:
    """Turn ``count`` of the first category's human labels wrong, for a repair to find."""
    project = Project.open(directory)
    with project.store.session() as session:
        planted = session.execute(
            select(Label.item_id, Label.label)
            .where(Label.category_id == 1, Label.source == LabelSource.HUMAN)
            .order_by(Label.label.desc(), Label.item_id)
            .limit(count)
        ).all()
        for item, label in planted:
            ledger.revise_labels(
                session, 1, [ledger.NewLabel(item, 1 - label, 0.999, 3)], source=LabelSource.HUMAN, origin="test"
            )
    project.close()
