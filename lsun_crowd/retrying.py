"""One retry policy for every crowd adapter: a transient failure is tried again, boundedly.

An adapter raises :class:`~lsun_crowd.crowd.TransientCrowdError` for a failure that may pass on its
own: a timeout, throttling, a server error, a response lost after the request took effect. Every
method of :class:`~lsun_crowd.crowd.CrowdBackend` is idempotent (publishing a batch id twice,
approving an approved assignment and paying a bonus token twice change nothing the second time),
so calling again is always safe. :class:`RetryingCrowd` wraps any adapter and does that with
tenacity: exponential back-off with jitter (or the platform's ``retry_after`` when it gives one),
at most :attr:`RetryPolicy.attempts` calls and :attr:`RetryPolicy.seconds` of waiting per call.
Any other :class:`~lsun_crowd.crowd.CrowdError` is final and passes through at once.

The cascade wraps whatever crowd it is given (:func:`with_retries`), so a vendor's adapter gets
the policy without writing one; an adapter that retries on its own (Mechanical Turk's client does,
per request) simply raises plain :class:`~lsun_crowd.crowd.CrowdError` once it gives up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_random_exponential

from lsun_crowd.crowd import (
    Assignment,
    CostEstimate,
    CrowdBackend,
    HitBatch,
    HitStatus,
    PublishedHit,
    QualificationResult,
    TransientCrowdError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8  # calls in all, the first included
    seconds: float = 600.0  # waiting, in all, before the last error is final
    first_wait: float = 0.5  # the back-off's scale; waits grow to at most max_wait
    max_wait: float = 60.0


class _Wait:
    """Exponential back-off with full jitter, unless the platform said how long to wait."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.backoff = wait_random_exponential(multiplier=policy.first_wait, max=policy.max_wait)
        self.max_wait = policy.max_wait

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, TransientCrowdError) and error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.max_wait)
        return float(self.backoff(state))


class RetryingCrowd:
    """``crowd`` with every call retried under ``policy`` on :class:`TransientCrowdError`.

    Attributes other than the protocol's (a virtual clock, a preview, a spend confirmation, an
    adapter's own helpers) pass through unchanged, so the optional protocols the wrapped adapter
    implements are still recognised."""

    def __init__(
        self, crowd: CrowdBackend, policy: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.wrapped = crowd
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.name = crowd.name
        self.retries = 0  # calls repeated after a transient error, for reports and tests

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        def note(state: RetryCallState) -> None:
            self.retries += 1
            error = state.outcome.exception() if state.outcome is not None else None
            log.warning("%s: %s failed (%s); attempt %d, retrying", self.name, operation, error, state.attempt_number)

        retrying = Retrying(
            retry=retry_if_exception_type(TransientCrowdError),
            wait=_Wait(self.policy),
            stop=stop_after_attempt(self.policy.attempts) | stop_after_delay(self.policy.seconds),
            sleep=self.sleep,
            before_sleep=note,
            reraise=True,
        )
        return retrying(call)

    def publish(self, batch: HitBatch) -> list[PublishedHit]:
        return self._call("publish", lambda: self.wrapped.publish(batch))

    def hit_status(self, hit_ids: Sequence[str]) -> list[HitStatus]:
        return self._call("hit_status", lambda: self.wrapped.hit_status(hit_ids))

    def list_assignments(self, hit_id: str) -> list[Assignment]:
        return self._call("list_assignments", lambda: self.wrapped.list_assignments(hit_id))

    def qualification_results(self, test_id: str) -> list[QualificationResult]:
        return self._call("qualification_results", lambda: self.wrapped.qualification_results(test_id))

    def approve(self, assignment_id: str, feedback: str | None = None) -> None:
        self._call("approve", lambda: self.wrapped.approve(assignment_id, feedback))

    def reject(self, assignment_id: str, feedback: str) -> None:
        self._call("reject", lambda: self.wrapped.reject(assignment_id, feedback))

    def pay_bonus(self, worker_id: str, assignment_id: str, amount: Decimal, reason: str, token: str) -> None:
        self._call("pay_bonus", lambda: self.wrapped.pay_bonus(worker_id, assignment_id, amount, reason, token))

    def block_worker(self, worker_id: str, reason: str) -> None:
        self._call("block_worker", lambda: self.wrapped.block_worker(worker_id, reason))

    def unblock_worker(self, worker_id: str, reason: str) -> None:
        self._call("unblock_worker", lambda: self.wrapped.unblock_worker(worker_id, reason))

    def expire(self, hit_ids: Sequence[str]) -> None:
        self._call("expire", lambda: self.wrapped.expire(hit_ids))

    def estimate_cost(self, batch: HitBatch) -> CostEstimate:
        return self._call("estimate_cost", lambda: self.wrapped.estimate_cost(batch))

    def balance(self) -> Decimal | None:
        return self._call("balance", self.wrapped.balance)


def with_retries(
    crowd: CrowdBackend, policy: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep
) -> CrowdBackend:
    """``crowd`` under the retry policy (a crowd already wrapped is returned as it is)."""
    if isinstance(crowd, RetryingCrowd):
        return crowd
    return RetryingCrowd(crowd, policy, sleep)
