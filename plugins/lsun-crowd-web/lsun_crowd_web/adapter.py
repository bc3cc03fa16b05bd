"""The in-house browser crowd behind the :class:`~lsun_crowd.crowd.CrowdBackend` interface.

Publishing puts HITs in the shared queue (:mod:`lsun_crowd_web.state`); annotators take them in
their browsers through ``lsun-crowd serve``; collecting reads what they submitted. There is no
platform money: rewards are what the project says it pays its team, with no fees, and there is
no balance to check.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal

from lsun_crowd.crowd import (
    Assignment,
    AssignmentStatus,
    CostEstimate,
    CrowdError,
    HitBatch,
    HitState,
    HitStatus,
    PublishedHit,
    QualificationResult,
)
from lsun_crowd_web.state import WebState


class WebCrowd:
    name = "web"

    def __init__(self, state: WebState) -> None:
        self.state = state

    def publish(self, batch: HitBatch) -> list[PublishedHit]:
        ids = self.state.publish(batch)
        return [PublishedHit(spec.hit_key, ids[spec.hit_key]) for spec in batch.hits]

    def hit_status(self, hit_ids: Sequence[str]) -> list[HitStatus]:
        statuses = []
        for hit_id in hit_ids:
            done, requested, expired = self.state.hit_counts(hit_id)
            state = HitState.COMPLETE if done >= requested else HitState.EXPIRED if expired else HitState.OPEN
            statuses.append(HitStatus(hit_id, state, done, requested))
        return statuses

    def list_assignments(self, hit_id: str) -> list[Assignment]:
        return [
            Assignment(aid, hit_id, worker, AssignmentStatus(status), json.loads(answers), accepted, submitted)
            for aid, worker, status, answers, accepted, submitted in self.state.assignments(hit_id)
        ]

    def approve(self, assignment_id: str, feedback: str | None = None) -> None:
        self.state.review(assignment_id, AssignmentStatus.APPROVED, feedback)

    def reject(self, assignment_id: str, feedback: str) -> None:
        self.state.review(assignment_id, AssignmentStatus.REJECTED, feedback)

    def pay_bonus(self, worker_id: str, assignment_id: str, amount: Decimal, reason: str, token: str) -> None:
        if amount <= 0:
            raise CrowdError(f"a bonus must be positive, not {amount}")
        self.state.execute("INSERT OR IGNORE INTO bonuses VALUES (?, ?, ?)", (token, worker_id, str(amount)))

    def block_worker(self, worker_id: str, reason: str) -> None:
        self.state.execute("INSERT OR IGNORE INTO blocks VALUES (?, ?)", (worker_id, reason))
        self.state.execute("DELETE FROM leases WHERE worker = ?", (worker_id,))

    def unblock_worker(self, worker_id: str, reason: str) -> None:
        self.state.execute("DELETE FROM blocks WHERE worker = ?", (worker_id,))

    def expire(self, hit_ids: Sequence[str]) -> None:
        for hit_id in hit_ids:
            self.state.execute("UPDATE hits SET expired = 1 WHERE hit_id = ?", (hit_id,))
            self.state.execute("DELETE FROM leases WHERE hit_id = ?", (hit_id,))

    def estimate_cost(self, batch: HitBatch) -> CostEstimate:
        return CostEstimate(batch.reward_per_assignment * batch.assignments_per_hit * len(batch.hits), Decimal(0))

    def balance(self) -> Decimal | None:
        return None

    def qualification_results(self, test_id: str) -> list[QualificationResult]:
        rows = self.state.execute(
            "SELECT worker, correct, total, passed FROM qualifications WHERE test_id = ? ORDER BY worker", (test_id,)
        )
        return [QualificationResult(str(w), int(c), int(t), bool(p)) for w, c, t, p in rows]
