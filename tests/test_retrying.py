"""The one retry policy every adapter gets: from the project's [crowd] settings, bounded in
attempts and in time, transient errors only."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from lsun_crowd.context import Context, Progress
from lsun_crowd.crowd import CrowdError, TransientCrowdError
from lsun_crowd.retrying import RetryingCrowd, RetryPolicy
from lsun_crowd.store import Store
from lsun_crowd.testing import digits_config, write_project


class Flaky:
    """Fails every call with ``error`` until ``failures`` calls have failed."""

    name = "flaky"

    def __init__(self, error: CrowdError, failures: int) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    def balance(self) -> Decimal:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return Decimal("5")


def context(tmp_path: Path, crowd: object, **retry: object) -> Context:
    config = write_project(tmp_path, digits_config(overrides={"crowd": retry}))
    waits: list[float] = []
    return Context(config, Store.for_project(tmp_path), crowd, Progress(), lambda: None, waits.append)  # type: ignore[arg-type]


def test_the_project_settings_bound_the_attempts(tmp_path: Path) -> None:
    flaky = Flaky(TransientCrowdError("503"), failures=10)
    ctx = context(tmp_path, flaky, retry_attempts=3, retry_seconds=60)
    assert isinstance(ctx.crowd, RetryingCrowd)
    with pytest.raises(TransientCrowdError, match="503"):
        ctx.crowd.balance()
    assert flaky.calls == 3
    recovering = Flaky(TransientCrowdError("throttled"), failures=2)
    assert context(tmp_path / "again", recovering).crowd.balance() == Decimal("5")
    assert recovering.calls == 3


def test_a_final_error_is_not_retried(tmp_path: Path) -> None:
    flaky = Flaky(CrowdError("no such HIT"), failures=1)
    with pytest.raises(CrowdError, match="no such HIT"):
        context(tmp_path, flaky).crowd.balance()
    assert flaky.calls == 1


def test_the_waiting_is_bounded_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = Flaky(TransientCrowdError("timed out"), failures=1000)
    waited: list[float] = []
    clock = [0.0]

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        clock[0] += seconds

    crowd = RetryingCrowd(flaky, RetryPolicy(attempts=1000, seconds=30, first_wait=1, max_wait=8), sleep)  # type: ignore[arg-type]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # tenacity's clock: the waits alone
    with pytest.raises(TransientCrowdError):
        crowd.balance()
    assert sum(waited) <= 30 + 8 and max(waited) <= 8 and flaky.calls < 1000
