"""Two annotators label a cascade round's grids in a real browser (Debian's chromium driven by
Playwright), with the keyboard and the mouse; the cascade then collects and reviews their votes.
The pages are served under the strict Content-Security-Policy, and the browser's own form posts
pass the origin and form-token checks: the templates run as they are."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from live_server import LiveServer
from lsun_crowd_web import WebCrowd
from sqlalchemy import func, select

from lsun_crowd.loop import Cascade, CategoryOutcome
from lsun_crowd.project import Project
from lsun_crowd.schema import AssignmentRow, Item, Round, Vote, Worker
from lsun_crowd.testing import REMOVE, digits_project

REQUIRED = os.environ.get("LSUN_CROWD_REQUIRE_BROWSER") == "1"  # CI: a missing browser is a failure
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("LSUN_CROWD_ARTIFACTS", Path(__file__).resolve().parents[3] / "test-artifacts"))


def browser_or_skip():  # type: ignore[no-untyped-def]
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
    return sync_playwright


def make_project(directory: Path) -> dict[str, bool]:
    """18 images of digit-0's pool in one round: two HITs of nine images and a gold one, two votes each."""
    directory.mkdir(parents=True)
    crowd = {"adapter": "web", "votes_per_item": 2, "max_votes_per_item": 2, "poll_seconds": 0.2}
    targets = digits_project(
        directory,
        limit=120,
        digits=range(1),
        seed=0,
        sample_per_round=18,
        # One batch: calibration images on the same two votes, and no repair pass at the round limit.
        overrides={
            "crowd": {**crowd, "settings": {"seed": REMOVE, "truth_file": REMOVE}},
            "cascade": {"calibration_max_votes": 2},
            "repair": {"enabled": False},
        },
    )
    project = Project.open(directory)
    with project.store.session() as session:
        uris = dict(session.execute(select(Item.id, Item.uri)).all())
    project.close()
    return {str(item): bool(targets[int(Path(uri).stem)] == 0) for item, uri in uris.items()}


def test_annotators_label_grids_in_a_browser_and_the_cascade_sees_their_votes(tmp_path: Path) -> None:
    sync_playwright = browser_or_skip()
    directory = tmp_path / "project"
    truth = make_project(directory)
    project = Project.open(directory)
    crowd = project.crowd()
    assert isinstance(crowd, WebCrowd)
    outcome: list[CategoryOutcome] = []
    cascade = Cascade(project.config, project.store, crowd, lambda: project.embedding_cache())
    runner = threading.Thread(target=lambda: outcome.extend(cascade.run(max_rounds=1)), daemon=True)
    runner.start()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    grids = 0
    with LiveServer(crowd.state) as live, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        violations: list[str] = []  # what the browser blocked under the CSP
        policies: list[str] = []
        for annotator in ("ana", "ben"):
            page = browser.new_page()
            page.on(
                "console",
                lambda message: violations.append(message.text) if "Content Security" in message.text else None,
            )
            page.on("response", lambda response: policies.append(response.headers.get("content-security-policy", "")))
            page.goto(f"{live.url}/a/{crowd.state.add_annotator(annotator)}")
            deadline = time.monotonic() + 60
            while page.locator(".tile").count() == 0:  # the cascade is still sampling and publishing
                assert time.monotonic() < deadline, "no HIT was published within a minute"
                time.sleep(0.3)
                page.reload()
            while page.locator(".tile").count():
                tiles = page.locator(".tile")
                count = tiles.count()
                assert page.locator("#counter").inner_text() == f"0 of {count} answered"
                page.click("#submit")  # an incomplete HIT is refused in the page
                assert page.locator("#problem").inner_text() == "Please answer every image first."
                for index in range(count):
                    tile = tiles.nth(index)
                    shows = truth[tile.get_attribute("data-field").removeprefix("item-")]  # type: ignore[union-attr]
                    if index % 3 == 1:  # the mouse: one click says yes, a second says no
                        tile.click()
                        if not shows:
                            tile.click()
                    else:  # the keyboard
                        tile.press("y" if shows else "n")
                    assert tile.get_attribute("class") == f"tile {'yes' if shows else 'no'}"
                assert page.locator("#counter").inner_text() == f"{count} of {count} answered"
                if grids == 0:
                    page.screenshot(path=str(ARTIFACTS / "web-grid-labeled.png"), full_page=True)
                with page.expect_navigation():
                    page.click("#submit")
                grids += 1
            assert "Nothing to label right now" in page.content()
        browser.close()
        runner.join(120)
    assert violations == []
    assert len(policies) > 40 and all("script-src 'nonce-" in policy for policy in policies)  # pages and images
    assert not runner.is_alive() and outcome and outcome[0].rounds == 1
    assert grids == 4  # two HITs, two annotators each
    with project.store.session() as session:
        assert session.scalar(select(Round.state)) == "done"
        assert session.scalar(select(func.count(AssignmentRow.id))) == 4
        assert session.scalar(select(func.count(Vote.id))) == 4 * 10
        # The review step scored both annotators' gold answers: one gold image in each HIT, all right.
        workers = session.execute(select(Worker.platform_worker_id, Worker.gold_correct, Worker.gold_wrong)).all()
        assert sorted(workers) == [("ana", 2, 0), ("ben", 2, 0)]
    assert {
        status
        for hit_id in crowd.state.execute("SELECT hit_id FROM hits")
        for status in [a[2] for a in crowd.state.assignments(str(hit_id[0]))]
    } == {"approved"}
    assert (ARTIFACTS / "web-grid-labeled.png").stat().st_size > 5_000
    project.close()
