"""A crowd that fails the way real platforms do, on purpose and from a seed.

:class:`FaultyCrowd` wraps any adapter and, before or after passing each call on, may inject:

- a **timeout**, **throttling** (with a ``retry_after``) or a **server error**: the call is not
  made, and the caller sees a :class:`~lsun_crowd.crowd.TransientCrowdError`;
- a **lost response**: the call is made and takes effect, then the caller sees the same error, as
  when a connection drops after the platform did the work;
- a **partial page**: ``list_assignments`` returns only the first part of what is there, and
  ``hit_status`` only some of the HITs asked about;
- **duplicated** and **reordered** assignments in a listing;
- **latency**: a sleep of up to ``latency_seconds`` before a call.

Every draw comes from one generator seeded by ``seed``, so a run is reproducible. ``injected``
counts what was injected, by kind. Methods outside the protocol (a virtual clock, an adapter's
own helpers) pass through untouched. The cascade must end with the labels of a clean run:
transient errors are retried (:mod:`lsun_crowd.retrying`), and the collector reads a short
listing again and stores a repeated assignment once.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from lsun_crowd.crowd import (
    Assignment,
    CostEstimate,
    CrowdBackend,
    CrowdError,
    HitBatch,
    HitStatus,
    PublishedHit,
    QualificationResult,
    TransientCrowdError,
)
from lsun_crowd.plugins import Plugins, parse_crowd_settings

T = TypeVar("T")
Rate = Field(default=0.0, ge=0.0, le=0.5)


class FaultPlan(BaseModel):
    """``[crowd.settings]`` of the ``faults`` adapter: what it wraps, and how often each fault hits
    (a share of calls, at most one half so that a retried call gets through)."""

    model_config = ConfigDict(extra="forbid")

    wraps: str = "mock"  # the adapter faults are injected into
    settings: dict[str, Any] = Field(default_factory=dict)  # that adapter's own [crowd.settings]
    seed: int = 0
    timeouts: float = Rate
    throttling: float = Rate
    server_errors: float = Rate
    lost_responses: float = Rate
    partial_pages: float = Rate
    duplicates: float = Rate
    reorders: float = Rate
    latency_seconds: float = Field(default=0.0, ge=0.0, le=5.0)

    @classmethod
    def everything(cls, wraps: str, settings: Mapping[str, Any], seed: int = 0, rate: float = 0.1) -> FaultPlan:
        """Every fault at ``rate`` (no latency): what the reliability tests run."""
        return cls(
            wraps=wraps,
            settings=dict(settings),
            seed=seed,
            timeouts=rate,
            throttling=rate,
            server_errors=rate,
            lost_responses=rate,
            partial_pages=rate,
            duplicates=rate,
            reorders=rate,
        )


class FaultyCrowd:
    """``inner`` with the faults of ``plan`` injected (see the module's docstring)."""

    def __init__(self, inner: CrowdBackend, plan: FaultPlan, sleep: Callable[[float], None] = time.sleep) -> None:
        self.inner = inner
        self.plan = plan
        self.sleep = sleep
        self.name = f"faults({inner.name})"
        self.injected: Counter[str] = Counter()
        self._random = random.Random(plan.seed)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], project_dir: Path) -> FaultyCrowd:
        plan = parse_crowd_settings(FaultPlan, settings)
        if plan.wraps == "faults":
            raise CrowdError("crowd.settings.wraps: the faults adapter wraps another adapter, not itself")
        return cls(Plugins().create_crowd(plan.wraps, plan.settings, project_dir), plan)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # -- injection --------------------------------------------------------------------------------

    def _hit(self, rate: float, kind: str) -> bool:
        if rate > 0 and self._random.random() < rate:
            self.injected[kind] += 1
            return True
        return False

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        plan = self.plan
        if plan.latency_seconds:
            self.sleep(self._random.uniform(0, plan.latency_seconds))
        if self._hit(plan.timeouts, "timeout"):
            raise TransientCrowdError(f"{operation}: the request timed out (injected)")
        if self._hit(plan.throttling, "throttling"):
            raise TransientCrowdError(f"{operation}: rate exceeded (injected)", retry_after=0.0)
        if self._hit(plan.server_errors, "server error"):
            raise TransientCrowdError(f"{operation}: 503 Service Unavailable (injected)")
        result = call()
        if self._hit(plan.lost_responses, "lost response"):
            raise TransientCrowdError(f"{operation}: the connection dropped after the request was sent (injected)")
        return result

    # -- the protocol -----------------------------------------------------------------------------

    def publish(self, batch: HitBatch) -> list[PublishedHit]:
        return self._call("publish", lambda: self.inner.publish(batch))

    def hit_status(self, hit_ids: Sequence[str]) -> list[HitStatus]:
        statuses = self._call("hit_status", lambda: self.inner.hit_status(hit_ids))
        if len(statuses) > 1 and self._hit(self.plan.partial_pages, "partial page"):
            statuses = statuses[: self._random.randrange(1, len(statuses))]
        return statuses

    def list_assignments(self, hit_id: str) -> list[Assignment]:
        listed = self._call("list_assignments", lambda: self.inner.list_assignments(hit_id))
        if listed and self._hit(self.plan.partial_pages, "partial page"):
            listed = listed[: self._random.randrange(0, len(listed))]
        if listed and self._hit(self.plan.duplicates, "duplicate"):
            listed = listed + self._random.sample(listed, self._random.randint(1, len(listed)))
        if len(listed) > 1 and self._hit(self.plan.reorders, "reorder"):
            listed = self._random.sample(listed, len(listed))
        return listed

    def qualification_results(self, test_id: str) -> list[QualificationResult]:
        return self._call("qualification_results", lambda: self.inner.qualification_results(test_id))

    def approve(self, assignment_id: str, feedback: str | None = None) -> None:
        self._call("approve", lambda: self.inner.approve(assignment_id, feedback))

    def reject(self, assignment_id: str, feedback: str) -> None:
        self._call("reject", lambda: self.inner.reject(assignment_id, feedback))

    def pay_bonus(self, worker_id: str, assignment_id: str, amount: Decimal, reason: str, token: str) -> None:
        self._call("pay_bonus", lambda: self.inner.pay_bonus(worker_id, assignment_id, amount, reason, token))

    def block_worker(self, worker_id: str, reason: str) -> None:
        self._call("block_worker", lambda: self.inner.block_worker(worker_id, reason))

    def unblock_worker(self, worker_id: str, reason: str) -> None:
        self._call("unblock_worker", lambda: self.inner.unblock_worker(worker_id, reason))

    def expire(self, hit_ids: Sequence[str]) -> None:
        self._call("expire", lambda: self.inner.expire(hit_ids))

    def estimate_cost(self, batch: HitBatch) -> CostEstimate:
        return self._call("estimate_cost", lambda: self.inner.estimate_cost(batch))

    def balance(self) -> Decimal | None:
        return self._call("balance", self.inner.balance)
