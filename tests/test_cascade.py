"""The cascade end to end on real digit images through the simulated crowd."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from lsun_crowd.crowd import Assignment, CrowdBackend, CrowdError
from lsun_crowd.demo import score_export
from lsun_crowd.export import export
from lsun_crowd.project import Project
from lsun_crowd.schema import (
    AssignmentRow,
    Hit,
    HitItemRow,
    Item,
    Label,
    Round,
    RoundKind,
    RoundTest,
    Spend,
    Vote,
    Worker,
)
from lsun_crowd.status import category_status
from lsun_crowd.testing import update_project

from .conftest import make_digits_project


def answer_slots(session: Any) -> int:
    """Images shown, summed over submitted assignments."""
    return int(
        session.scalar(
            select(func.count()).select_from(AssignmentRow).join(HitItemRow, HitItemRow.hit_id == AssignmentRow.hit_id)
        )
        or 0
    )


def run(directory: Path, crowd: CrowdBackend | None = None, **kwargs: Any) -> tuple[Project, list]:
    project = Project.open(directory)
    cascade = project.cascade(crowd or project.crowd())
    return project, cascade.run(**kwargs)


def test_cascade_labels_digits_with_checked_precision(digits_project: tuple[Path, np.ndarray]) -> None:
    directory, targets = digits_project
    project, outcomes = run(directory)
    assert [(o.category, o.reason) for o in outcomes] == [("digit-0", "resolved"), ("digit-1", "resolved")]
    export(project.store, directory / "export.jsonl")
    scores = score_export(directory / "export.jsonl", targets)
    for score in scores:
        assert score.precision >= 0.95, score
        assert score.recall >= 0.9, score
        assert score.unlabeled < 0.05 * len(targets)
    records = [json.loads(line) for line in (directory / "export.jsonl").read_text().splitlines()]
    assert len(records) == 2 * len(targets)
    assert {r["source"] for r in records} == {"human", "model"}  # the model did part of the work
    with project.store.session() as session:
        # Each category's certification recorded its tests, and together they stay within the
        # category's error budget (1 - confidence, with confidence 0.5 here).
        tests = session.execute(
            select(Round.category_id, RoundTest.side, RoundTest.delta, RoundTest.threshold).join(
                Round, Round.id == RoundTest.round_id
            )
        ).all()
        assert any(threshold is not None for *_, threshold in tests)
        for category in {row[0] for row in tests}:
            spent = sum(delta for cat, _, delta, _ in tests if cat == category)
            assert 0 < spent <= 1 - 0.5
        orphan_votes = session.scalar(
            select(func.count(Vote.id))
            .join(AssignmentRow, AssignmentRow.id == Vote.assignment_id)
            .outerjoin(HitItemRow, (HitItemRow.hit_id == AssignmentRow.hit_id) & (HitItemRow.item_id == Vote.item_id))
            .where(HitItemRow.item_id.is_(None))
        )
        assert orphan_votes == 0
        votes = session.scalar(select(func.count(Vote.id)))
        assert votes == answer_slots(session)  # every image of every submitted HIT answered once
        assert session.scalar(select(func.count(Hit.id)).where(Hit.platform_hit_id.is_(None))) == 0
        spent = Decimal(session.scalar(select(func.sum(Spend.amount))) or 0)
        assert session.scalar(select(func.count(Round.id)).where(Round.state != "done")) == 0
    assert Decimal("10000") - project.crowd().balance() == spent  # type: ignore[operator]
    status = {row.category: row for row in category_status(project.store, ["digit-0", "digit-1"])}
    assert status["digit-0"].positive + status["digit-0"].negative + status["digit-0"].unlabeled == len(targets)
    assert status["digit-0"].votes + status["digit-1"].votes == votes


def test_resolved_run_does_nothing_more(digits_project: tuple[Path, np.ndarray]) -> None:
    directory, _ = digits_project
    project, _ = run(directory, categories=["digit-0"])
    with project.store.session() as session:
        before = (session.scalar(select(func.count(Vote.id))), session.scalar(select(func.count(Label.id))))
    project, outcomes = run(directory, categories=["digit-0"])
    with project.store.session() as session:
        after = (session.scalar(select(func.count(Vote.id))), session.scalar(select(func.count(Label.id))))
    assert before == after and outcomes[0].reason == "resolved"


def test_round_limit(digits_project: tuple[Path, np.ndarray]) -> None:
    directory, _ = digits_project
    project, outcomes = run(directory, categories=["digit-1"], max_rounds=1)
    assert outcomes[0].reason == "round limit" and outcomes[0].rounds == 1
    with project.store.session() as session:
        # One round sampled the pool; a certification round may follow it (it does not count).
        assert session.scalar(select(func.count(Round.id)).where(Round.kind == RoundKind.SPLIT)) == 1


def test_budget_stops_before_publishing_and_resumes_when_raised(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    make_digits_project(directory, limit=300, digits=range(1), sample=100)
    config = (directory / "lsun-crowd.toml").read_text()
    update_project(directory, {"cascade": {"budget": Decimal("0.5")}})
    project, outcomes = run(directory)
    assert outcomes[0].reason == "budget" and outcomes[0].rounds == 0
    with project.store.session() as session:
        assert session.scalar(select(func.count(Spend.id))) == 0
        assert session.scalar(select(func.count(Hit.id)).where(Hit.platform_hit_id.is_not(None))) == 0
    assert project.crowd().balance() == Decimal("10000")
    (directory / "lsun-crowd.toml").write_text(config)
    _, outcomes = run(directory)
    assert outcomes[0].reason == "resolved"


def test_balance_stops_before_publishing(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    make_digits_project(
        directory,
        limit=300,
        digits=range(1),
        sample=100,
        overrides={"crowd": {"settings": {"balance": Decimal("0.30")}}},
    )
    project, outcomes = run(directory)
    assert outcomes[0].reason == "balance"
    with project.store.session() as session:
        assert "the account holds 0.3" in (session.scalar(select(Round.notes)) or "")


class FlakyDelivery:
    """Wraps a crowd: every assignment is listed twice, with a junk answer and an unknown image."""

    def __init__(self, inner: CrowdBackend) -> None:
        self.inner = inner
        self.name = "flaky"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def list_assignments(self, hit_id: str) -> list[Assignment]:
        listed = self.inner.list_assignments(hit_id)
        mangled = []
        for assignment in listed:
            answers = dict(assignment.answers)
            first = sorted(answers)[0]
            answers[first] = "maybe"
            answers["999999"] = "yes"
            mangled.append(replace(assignment, answers=answers))
        return mangled + mangled


def test_duplicate_and_malformed_deliveries(
    digits_project: tuple[Path, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    directory, _ = digits_project
    project = Project.open(directory)
    flaky = FlakyDelivery(project.crowd())
    project.cascade(flaky).run(categories=["digit-0"], max_rounds=1)  # type: ignore[arg-type]
    with project.store.session() as session:
        assignments = session.scalar(select(func.count(AssignmentRow.id)))
        votes = session.scalar(select(func.count(Vote.id)))
        slots = answer_slots(session)
        ids = list(session.scalars(select(AssignmentRow.platform_assignment_id)))
    assert len(ids) == len(set(ids))
    assert votes == slots - assignments  # one mangled answer dropped per assignment, the rest kept once
    assert "ignored answer 'maybe'" in caplog.text and "'999999'" in caplog.text


# Three hidden gold images a HIT: on a pool the model mostly labels, enough gold answers for the
# simulated spammers and adversaries to be caught.
GOLD_HEAVY = {"crowd": {"gold_per_hit": 3}}


def test_blocked_workers_votes_are_discounted(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    make_digits_project(directory, overrides=GOLD_HEAVY)
    project, _ = run(directory)
    crowd = project.crowd()
    with project.store.session() as session:
        from lsun_crowd.schema import Worker

        blocked = list(session.scalars(select(Worker.platform_worker_id).where(Worker.blocked)))
        rejected = session.scalar(select(func.count(AssignmentRow.id)).where(AssignmentRow.status == "rejected"))
    assert blocked, "the spammers and adversaries should be caught on gold"
    kinds = dict(zip((crowd.worker_id(i) for i in range(crowd.mix.workers)), crowd.kinds, strict=True))  # type: ignore[attr-defined]
    assert all(kinds[worker] != "honest" for worker in blocked)
    assert all(crowd.is_blocked(worker) for worker in blocked)  # type: ignore[attr-defined]
    assert rejected and rejected > 0


def test_policy_can_pay_blocked_workers_work(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    make_digits_project(directory, overrides={"quality": {"reject_blocked_work": False}} | GOLD_HEAVY)
    project, _ = run(directory)
    with project.store.session() as session:
        from lsun_crowd.schema import Worker

        blocked = session.scalar(select(func.count(Worker.id)).where(Worker.blocked))
        statuses = set(session.scalars(select(AssignmentRow.status)))
    assert blocked and blocked > 0  # the policy still blocks
    assert statuses == {"approved"}  # but pays for the work already done


class AutoApproving:
    """A platform whose auto-approval delay ran out before the review: work is approved as soon
    as it is listed, like MTurk approves work nobody reviewed in time."""

    def __init__(self, inner: CrowdBackend) -> None:
        self.inner, self.name = inner, "auto-approving"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def list_assignments(self, hit_id: str) -> list[Assignment]:
        listed = self.inner.list_assignments(hit_id)
        for assignment in listed:
            self.inner.approve(assignment.assignment_id)
        return listed


def test_work_approved_before_review_stays_paid_and_the_run_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "p"
    make_digits_project(directory, overrides=GOLD_HEAVY)
    project = Project.open(directory)
    outcomes = project.cascade(AutoApproving(project.crowd())).run()  # type: ignore[arg-type]
    assert [outcome.reason for outcome in outcomes] == ["resolved", "resolved"]
    with project.store.session() as session:
        blocked = set(session.scalars(select(Worker.id).where(Worker.blocked)))
        statuses = set(session.scalars(select(AssignmentRow.status).where(AssignmentRow.worker_id.in_(blocked))))
    assert blocked  # the policy blocked workers on gold as usual ...
    assert statuses == {"approved"}  # ... but could not reject work the platform had approved
    assert "stays approved" in caplog.text


def test_an_image_gone_after_ingest_leaves_the_pool_not_the_run(
    digits_project: tuple[Path, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    directory, _ = digits_project
    (directory / "images" / "00007.png").unlink()
    (directory / "images" / "00011.png").write_bytes(b"garbage")
    project, outcomes = run(directory, categories=["digit-0"])
    assert outcomes[0].reason == "resolved"
    with project.store.session() as session:
        problems = dict(session.execute(select(Item.uri, Item.problem).where(Item.problem.is_not(None))).all())
    assert {Path(uri).name for uri in problems} == {"00007.png", "00011.png"}
    assert "no such file" in problems[str((directory / "images" / "00007.png").resolve())]
    assert "left out of the pool" in caplog.text
    records = [json.loads(line) for line in export_lines(project, directory)]
    gone = [r for r in records if Path(r["uri"]).name in {"00007.png", "00011.png"} and r["category"] == "digit-0"]
    assert [r["label"] for r in gone] == ["unlabeled", "unlabeled"]  # never sampled, never model-labeled


def export_lines(project: Project, directory: Path) -> list[str]:
    export(project.store, directory / "export.jsonl")
    return (directory / "export.jsonl").read_text().splitlines()


class FailingPlatform:
    """Wraps a crowd whose status calls fail (throttling, an outage) after a few polls."""

    def __init__(self, inner: CrowdBackend, fail_after: int) -> None:
        self.inner, self.calls, self.fail_after, self.name = inner, 0, fail_after, "failing"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def hit_status(self, hit_ids: Any) -> Any:
        self.calls += 1
        if self.calls > self.fail_after:
            raise CrowdError("ThrottlingException: rate exceeded")
        return self.inner.hit_status(hit_ids)


def test_a_platform_fault_mid_round_loses_nothing_and_resumes(digits_project: tuple[Path, np.ndarray]) -> None:
    directory, _ = digits_project
    project = Project.open(directory)
    failing = FailingPlatform(project.crowd(), fail_after=2)
    with pytest.raises(CrowdError, match="ThrottlingException"):
        project.cascade(failing).run(categories=["digit-0"])  # type: ignore[arg-type]
    with project.store.session() as session:
        assert session.scalar(select(Round.state)) == "published"
        stored = session.scalar(select(func.count(Vote.id)))
    assert stored and stored > 0  # what arrived before the fault is kept
    _, outcomes = run(directory, categories=["digit-0"])
    assert outcomes[0].reason == "resolved"
    with project.store.session() as session:
        assert session.scalar(select(func.count(Vote.id))) == answer_slots(session)


def test_unknown_crowd_adapter_is_named(digits_project: tuple[Path, np.ndarray]) -> None:
    directory, _ = digits_project
    from lsun_crowd.plugins import PluginError

    with pytest.raises(PluginError, match="no crowd adapter named 'acme'"):
        Project.open(directory).crowd("acme")
