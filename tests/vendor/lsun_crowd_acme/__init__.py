"""ACME Annotations: an in-house labeling vendor whose staff answer from a reference CSV."""

from __future__ import annotations

import csv
import hashlib
import itertools
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from lsun_crowd.crowd import (
    NO,
    YES,
    AlreadyApproved,
    Assignment,
    AssignmentStatus,
    CostEstimate,
    HitBatch,
    HitState,
    HitStatus,
    PublishedHit,
    QualificationResult,
    encode_choices,
)
from lsun_crowd.hookspecs import hookimpl
from lsun_crowd.plugins import CrowdAdapter, RegisterCrowdAdapter


class AcmeCrowd:
    """Staff who never err, work instantly, and bill a flat 10% fee; no account balance."""

    name = "acme"

    def __init__(self, answers: Mapping[tuple[str, str], bool]) -> None:
        self.answers = answers
        self.batches: dict[str, list[PublishedHit]] = {}
        self.hits: dict[str, tuple[HitBatch, int, tuple[str, ...]]] = {}  # batch, spec, staff on it
        self.reviews: dict[str, AssignmentStatus] = {}
        self.expired: set[str] = set()
        self.bonuses: dict[str, tuple[str, Decimal]] = {}  # token → worker, amount
        self.blocked: set[str] = set()
        self.qualifications: dict[str, dict[str, QualificationResult]] = {}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], project_dir: Path) -> AcmeCrowd:
        path = project_dir / str(settings.get("reference", "truth.csv"))
        with path.open(newline="") as handle:
            return cls({(row["uri"], row["category"]): row["label"] == "1" for row in csv.DictReader(handle)})

    def _roster(self, batch: HitBatch, kept_off: frozenset[str]) -> tuple[str, ...]:
        """The staff put on a HIT when it arrives: as many as it asks for, none who is blocked or
        kept off it."""
        available = (
            person
            for n in itertools.count()
            if (person := f"ACME-STAFF-{n}") not in self.blocked and person not in kept_off
        )
        return tuple(itertools.islice(available, batch.assignments_per_hit))

    def _staff(self, batch: HitBatch, roster: tuple[str, ...]) -> list[str]:
        """The staff who work on the batch: its roster, less any who failed its test."""
        staff = list(roster)
        test = batch.qualification
        if test is None:
            return staff
        results = self.qualifications.setdefault(test.test_id, {})
        for person in staff:
            if person not in results:
                given = {item.item_key: YES if self.answers[(item.uri, batch.category)] else NO for item in test.items}
                results[person] = test.grade(person, given)
        return [person for person in staff if results[person].passed]

    def qualification_results(self, test_id: str) -> list[QualificationResult]:
        return sorted(self.qualifications.get(test_id, {}).values(), key=lambda result: result.worker_id)

    def publish(self, batch: HitBatch) -> list[PublishedHit]:
        if batch.batch_id not in self.batches:
            published = []
            for index, spec in enumerate(batch.hits):
                hit_id = "ACME-" + hashlib.sha1(f"{batch.batch_id}/{spec.hit_key}".encode()).hexdigest()[:12]
                self.hits[hit_id] = (batch, index, self._roster(batch, spec.excluded_workers))
                published.append(PublishedHit(spec.hit_key, hit_id))
            self.batches[batch.batch_id] = published
        return self.batches[batch.batch_id]

    def hit_status(self, hit_ids: Sequence[str]) -> list[HitStatus]:
        statuses = []
        for hit_id in hit_ids:
            batch, _, roster = self.hits[hit_id]
            done = 0 if hit_id in self.expired else len(self._staff(batch, roster))
            # Staff short of the batch's ask (some failed its test) leave the HIT to run out.
            complete = done == batch.assignments_per_hit and hit_id not in self.expired
            statuses.append(
                HitStatus(hit_id, HitState.COMPLETE if complete else HitState.EXPIRED, done, batch.assignments_per_hit)
            )
        return statuses

    def list_assignments(self, hit_id: str) -> list[Assignment]:
        if hit_id in self.expired:
            return []
        batch, index, roster = self.hits[hit_id]
        if batch.multi_label:  # every category the image shows, asked at once
            answers = {
                item.item_key: encode_choices(name for name in batch.categories if self.answers[(item.uri, name)])
                for item in batch.hits[index].items
            }
        else:
            answers = {
                item.item_key: YES if self.answers[(item.uri, batch.category)] else NO
                for item in batch.hits[index].items
            }
        return [
            Assignment(
                f"{hit_id}-{person}",
                hit_id,
                person,
                self.reviews.get(f"{hit_id}-{person}", AssignmentStatus.SUBMITTED),
                answers,
                0.0,
                1.0,
            )
            for person in self._staff(batch, roster)
        ]

    def approve(self, assignment_id: str, feedback: str | None = None) -> None:
        self.reviews[assignment_id] = AssignmentStatus.APPROVED

    def reject(self, assignment_id: str, feedback: str) -> None:
        if self.reviews.get(assignment_id) == AssignmentStatus.APPROVED:
            raise AlreadyApproved("approved work cannot be rejected")
        self.reviews[assignment_id] = AssignmentStatus.REJECTED

    def pay_bonus(self, worker_id: str, assignment_id: str, amount: Decimal, reason: str, token: str) -> None:
        self.bonuses.setdefault(token, (worker_id, amount))

    def block_worker(self, worker_id: str, reason: str) -> None:
        self.blocked.add(worker_id)

    def unblock_worker(self, worker_id: str, reason: str) -> None:
        self.blocked.discard(worker_id)

    def expire(self, hit_ids: Sequence[str]) -> None:
        self.expired.update(hit_ids)

    def estimate_cost(self, batch: HitBatch) -> CostEstimate:
        rewards = batch.reward_per_assignment * batch.assignments_per_hit * len(batch.hits)
        return CostEstimate(rewards, rewards / 10)

    def balance(self) -> Decimal | None:
        return None


@hookimpl
def register_crowd_adapters(register: RegisterCrowdAdapter) -> None:
    register(CrowdAdapter("acme", "ACME Annotations in-house staff", AcmeCrowd.from_settings))
