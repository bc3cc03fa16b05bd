"""The fault-injecting crowd: the conformance suite through it (with the core's retries), its
faults one by one, and the whole cascade through it on the simulated crowd, ending with exactly
the labels, votes and money of a clean run."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from lsun_crowd_faults import FaultPlan, FaultyCrowd
from lsun_crowd_mock import CrowdMix, SimulatedCrowd
from outcomes import labels_and_totals

from lsun_crowd.crowd import CrowdBackend, HitBatch, TransientCrowdError
from lsun_crowd.project import Project
from lsun_crowd.retrying import RetryingCrowd, RetryPolicy, with_retries
from lsun_crowd.testing import CrowdBackendConformance, conformance_truth, digits_project

NO_WAIT = RetryPolicy(attempts=12, seconds=60, first_wait=0.0, max_wait=0.0)


def everything(seed: int, rate: float = 0.15) -> FaultPlan:
    return FaultPlan.everything("mock", {}, seed=seed, rate=rate)


class TestFaultyCrowdConformance(CrowdBackendConformance):
    """Every promise of the interface holds through failed and lost calls once the core's retries
    are on. (Short, repeated and shuffled listings break the suite's listing checks by design; the
    collector's handling of them is what the cascade test below checks.)"""

    def make_backend(self, tmp_path: Path) -> CrowdBackend:
        self.state_file = tmp_path / "state.sqlite"
        inner = SimulatedCrowd(conformance_truth, CrowdMix(seed=3, expire_rate=0), self.state_file)
        plan = everything(seed=11).model_copy(update={"partial_pages": 0.0, "duplicates": 0.0, "reorders": 0.0})
        return with_retries(FaultyCrowd(inner, plan), NO_WAIT, sleep=lambda _: None)

    def bonuses_paid(self, backend: CrowdBackend, worker_id: str) -> list[Decimal]:
        with closing(sqlite3.connect(self.state_file)) as db:
            rows = db.execute("SELECT amount FROM bonuses WHERE worker_id = ?", (worker_id,)).fetchall()
        return [Decimal(amount) for (amount,) in rows]

    def make_batch_for_everyone(self, backend: CrowdBackend, batch_id: str) -> HitBatch:
        # As the simulated crowd's own suite does: one assignment per worker of its crowd.
        return replace(self.make_batch(batch_id), assignments_per_hit=CrowdMix(seed=3).workers)


class Recorder:
    """An adapter that records every call it gets, to see what the faults let through."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self.calls[operation] += 1
            return [] if operation in {"hit_status", "list_assignments"} else None

        return call


@pytest.mark.parametrize(
    ("fault", "made"),
    [("timeouts", 0), ("throttling", 0), ("server_errors", 0), ("lost_responses", 1)],
)
def test_an_injected_error_is_transient_and_a_lost_response_took_effect(fault: str, made: int) -> None:
    recorder = Recorder()
    crowd = FaultyCrowd(recorder, FaultPlan(wraps="recorder", **{fault: 0.5}))  # type: ignore[arg-type]
    errors = 0
    for _ in range(200):
        try:
            crowd.block_worker("w1", "test")
        except TransientCrowdError:
            errors += 1
    assert 70 <= errors <= 130  # about half the calls, from the seed
    assert recorder.calls["block_worker"] == 200 - errors + made * errors
    assert sum(crowd.injected.values()) == errors


def test_retries_carry_every_call_through_and_give_up_within_the_policy() -> None:
    recorder = Recorder()
    crowd = RetryingCrowd(FaultyCrowd(recorder, FaultPlan(wraps="recorder", server_errors=0.5, seed=4)), NO_WAIT)
    for _ in range(100):
        crowd.approve("a", None)
    assert recorder.calls["approve"] == 100 and crowd.retries > 30
    always = RetryingCrowd(FaultyCrowd(recorder, FaultPlan(wraps="recorder", timeouts=0.5, seed=1)), NO_WAIT)
    always.wrapped.plan = always.wrapped.plan.model_copy(update={"timeouts": 1.0})  # type: ignore[attr-defined]
    with pytest.raises(TransientCrowdError, match="timed out"):
        always.approve("a", None)
    assert always.retries == NO_WAIT.attempts - 1


def test_a_throttled_call_waits_as_long_as_the_platform_asks() -> None:
    class Throttled:
        name = "throttled"
        left = 2

        def balance(self) -> Decimal:
            if self.left:
                self.left -= 1
                raise TransientCrowdError("slow down", retry_after=7.5)
            return Decimal("1")

    waits: list[float] = []
    crowd = RetryingCrowd(Throttled(), RetryPolicy(max_wait=60), sleep=waits.append)  # type: ignore[arg-type]
    assert crowd.balance() == Decimal("1") and waits == [7.5, 7.5]


def test_pages_come_back_short_repeated_and_shuffled() -> None:
    class Lister:
        name = "lister"

        def list_assignments(self, hit_id: str) -> list[str]:
            return [f"{hit_id}-{number}" for number in range(6)]

    crowd = FaultyCrowd(Lister(), FaultPlan(wraps="lister", partial_pages=0.3, duplicates=0.3, reorders=0.3))  # type: ignore[arg-type]
    listings = [crowd.list_assignments("h") for _ in range(300)]
    assert sum(len(set(listing)) < 6 for listing in listings) == crowd.injected["partial page"] > 50
    assert any(len(listing) != len(set(listing)) for listing in listings)
    assert any(listing[: len(set(listing))] != sorted(set(listing)) for listing in listings)


def _run(directory: Path, crowd_settings: dict[str, Any] | None) -> tuple[dict[tuple[str, str], int], tuple[Any, ...]]:
    """Run a small digits project to the end; its labels and its totals."""
    # Uniform draws only: guided rounds (lsun_crowd.guided) ask about the images a model ranks
    # likeliest, whose consensus depends on which workers answer, and injected faults change that
    # (a short listing waits for the next poll: 27 polls against 25, so a blocked worker is kept off
    # a different HIT). The test asks whether faults lose or repeat anything, which needs both runs
    # to take one path.
    overrides: dict[str, Any] = {"cascade": {"max_rounds": 3, "guided_share": 0}}
    digits_project(directory, limit=400, digits=range(2), seed=5, sample_per_round=120, overrides=overrides)
    project = Project.open(directory)
    try:
        crowd = project.crowd()
        if crowd_settings is not None:
            crowd = FaultyCrowd(crowd, FaultPlan.everything("mock", {}, **crowd_settings))
        project.cascade(with_retries(crowd, NO_WAIT, sleep=lambda _: None)).run()
        labels, totals = labels_and_totals(project)
        injected = crowd.injected if isinstance(crowd, FaultyCrowd) else Counter()
        return labels, (*totals, str(project.cascade(crowd).spent()), sum(injected.values()) > 0)
    finally:
        project.close()


def test_the_cascade_through_faults_ends_as_a_clean_run(tmp_path: Path) -> None:
    clean_labels, clean_totals = _run(tmp_path / "clean", None)
    faulty_labels, faulty_totals = _run(tmp_path / "faulty", {"seed": 2, "rate": 0.1})
    assert len(clean_labels) > 300
    assert faulty_labels == clean_labels
    assert faulty_totals[:-1] == clean_totals[:-1]  # votes, assignments, HITs, money: nothing twice, nothing lost
    assert clean_totals[2] == clean_totals[3] and clean_totals[4] == 0
    assert faulty_totals[-1] and not clean_totals[-1]
