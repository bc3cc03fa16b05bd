"""The optional qualification test: gold images held back, taken once per worker and category
before any HIT, and only workers who pass it ever vote."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from lsun_crowd.context import RoundRef
from lsun_crowd.crowd import NO, YES, HitItem, QualificationTest
from lsun_crowd.project import Project
from lsun_crowd.publish import qualification_test
from lsun_crowd.schema import Gold, Hit, HitItemRow, Round, RoundKind, Vote, Worker

from .conftest import make_digits_project

QUALIFIED = {"quality": {"qualification_items": 6, "qualification_pass": 0.8}}


def test_grading_counts_right_answers_against_the_pass_mark() -> None:
    items = tuple(HitItem(str(i), f"/{i}.png") for i in range(10))
    test = QualificationTest("t", "q?", items, {str(i): YES if i < 5 else NO for i in range(10)}, pass_mark=0.7)
    assert test.needed == 7  # 0.7 × 10 in floating point is 7.000000000000001
    seven_right = {str(i): (YES if i < 5 else NO) if i < 7 else (NO if i < 5 else YES) for i in range(10)}
    assert test.grade("w", seven_right).correct == 7 and test.grade("w", seven_right).passed
    six_right = {**seven_right, "0": NO}
    result = test.grade("w", six_right)
    assert (result.correct, result.total, result.passed) == (6, 10, False)
    assert test.grade("w", {}).correct == 0  # an unanswered question is a wrong one


def test_only_workers_who_pass_the_test_vote(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    make_digits_project(directory, limit=300, digits=range(1), sample=100, overrides=QUALIFIED)
    project = Project.open(directory)
    cascade = project.cascade(project.crowd())
    cascade.run(max_rounds=1)
    crowd = project.crowd()
    key = project.store.project_key("digits-demo")
    results = crowd.qualification_results(f"{key}:digit-0:qualification")  # type: ignore[attr-defined]
    passed = {result.worker_id for result in results if result.passed}
    failed = {result.worker_id for result in results if not result.passed}
    with project.store.session() as session:
        voters = set(session.scalars(select(Worker.platform_worker_id).join(Vote, Vote.worker_id == Worker.id)))
        hidden_gold = set(session.scalars(select(HitItemRow.item_id).where(HitItemRow.is_gold)))
        gold = dict(session.execute(select(Gold.item_id, Gold.answer)).all())
        round_ = session.scalars(select(Round).where(Round.kind == RoundKind.SPLIT)).one()
        test = qualification_test(cascade.context, session, RoundRef("digit-0", round_.category_id, round_))
    assert test is not None and len(test.items) == 6
    assert sorted(test.answers.values()) == [NO, NO, NO, YES, YES, YES]  # both answers are tested
    assert all(test.answers[item.item_key] == (YES if gold[int(item.item_key)] else NO) for item in test.items)
    # The test's images are never hidden in a HIT: whoever took the test would know them.
    assert hidden_gold and hidden_gold.isdisjoint(int(item.item_key) for item in test.items)
    assert voters and voters <= passed
    # The simulated crowd's adversaries and constant answerers all fail; nearly every honest worker passes.
    kinds = {crowd.worker_id(index): kind for index, kind in enumerate(crowd.kinds)}  # type: ignore[attr-defined]
    assert {w for w, kind in kinds.items() if kind in ("adversary", "constant")} <= failed
    honest = {w for w, kind in kinds.items() if kind == "honest"}
    assert len(honest & passed) >= 0.9 * len(honest)
    assert len(results) == len(kinds)  # each worker took the test once, for every round to come
    project.close()


def test_too_few_gold_items_for_the_test_is_a_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    # The demo holds 20 gold images per category; 20 for the test leave none to hide in HITs.
    make_digits_project(directory, limit=200, digits=range(1), overrides={"quality": {"qualification_items": 20}})
    project = Project.open(directory)
    with pytest.raises(ValueError, match=r"'digit-0' has 20 gold item\(s\).*qualification_items.*at least 21"):
        project.cascade(project.crowd()).run(max_rounds=1)
    with project.store.session() as session:
        assert session.scalars(select(Hit)).first() is None  # nothing was published or half-stored
    project.close()
