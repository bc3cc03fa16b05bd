"""The cascade through the fault-injecting crowd over the in-house web crowd: annotators who
answer every image truthfully label the same pool twice, once cleanly and once with every
fault injected, and the two runs end with the same labels, votes, HITs and money."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from lsun_crowd_faults import FaultPlan, FaultyCrowd
from lsun_crowd_web import WebCrowd
from outcomes import labels_and_totals

from lsun_crowd.project import Project
from lsun_crowd.retrying import RetryPolicy, with_retries
from lsun_crowd.testing import REMOVE, digits_project

NO_WAIT = RetryPolicy(attempts=12, seconds=60, first_wait=0.0, max_wait=0.0)
ANNOTATORS = ("ana", "ben", "cho")


def _answer_everything(web: WebCrowd, targets: np.ndarray) -> int:
    """Every annotator takes and answers every HIT open to them; returns the HITs answered."""
    answered = 0
    for name in ANNOTATORS:
        while (hit := web.state.next_hit(name)) is not None:
            digit = int(hit.category.removeprefix("digit-"))
            answers = {
                item.item_key: "yes" if targets[int(Path(item.uri).stem)] == digit else "no" for item in hit.items
            }
            web.state.submit(name, hit.hit_id, answers)
            answered += 1
    return answered


def _run(directory: Path, faults: FaultPlan | None) -> tuple[dict[tuple[str, str], int], tuple[Any, ...]]:
    crowd_settings = {"adapter": "web", "poll_seconds": 0, "settings": {"seed": REMOVE, "truth_file": REMOVE}}
    overrides = {"crowd": crowd_settings, "cascade": {"max_rounds": 2}, "repair": {"enabled": False}}
    targets = digits_project(directory, limit=300, digits=range(2), seed=3, sample_per_round=100, overrides=overrides)
    project = Project.open(directory)
    try:
        web = project.crowd()
        assert isinstance(web, WebCrowd)
        for name in ANNOTATORS:
            web.state.add_annotator(name)
        crowd = FaultyCrowd(web, faults) if faults is not None else web
        cascade = project.cascade(with_retries(crowd, NO_WAIT, sleep=lambda _: None))
        for _ in range(200):
            outcomes = cascade.run(once=True)
            if all(outcome.reason != "running" for outcome in outcomes):
                break
            _answer_everything(web, targets)
        else:
            raise AssertionError("the cascade did not finish in 200 passes")
        labels, totals = labels_and_totals(project)
        queued = web.state.execute("SELECT COUNT(*) FROM hits")[0][0]
        injected = sum(crowd.injected.values()) if isinstance(crowd, FaultyCrowd) else 0
        return labels, (*totals, queued, str(cascade.spent()), injected > 0)
    finally:
        project.close()


def test_the_cascade_through_faults_on_the_web_crowd_ends_as_a_clean_run(tmp_path: Path) -> None:
    clean_labels, clean_totals = _run(tmp_path / "clean", None)
    plan = FaultPlan.everything("web", {}, seed=9, rate=0.1)
    quiet = logging.getLogger("lsun_crowd")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # every injected fault is logged as a warning
    try:
        faulty_labels, faulty_totals = _run(tmp_path / "faulty", plan)
    finally:
        quiet.setLevel(level)
    assert len(clean_labels) > 150 and clean_totals[0] > 0
    assert faulty_labels == clean_labels
    assert faulty_totals[:-1] == clean_totals[:-1]  # votes, assignments, HITs on our side and theirs, money
    assert faulty_totals[-1] and not clean_totals[-1]  # faults were injected, and only into one run
    assert clean_totals[2] == clean_totals[3] == clean_totals[5] and clean_totals[4] == 0  # every HIT queued once
