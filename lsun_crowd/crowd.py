"""The one interface every crowd platform sits behind, and the values that cross it.

A crowd adapter is a single object implementing :class:`CrowdBackend`. The cascade never
talks to a platform any other way, so Mechanical Turk, the simulated crowd, the in-house web
crowd and a third-party vendor are interchangeable. Everything that crosses the boundary is a
frozen dataclass; money is :class:`~decimal.Decimal`, never a float.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol, runtime_checkable

from lsun_crowd.redact import redact

YES = "yes"
NO = "no"
"""The two answers of the binary question every cascade HIT asks: "is this image a <category>?"."""
NONE_OF_THESE = "[]"
"""A multi-label answer that ticks no category."""


def encode_choices(categories: Iterable[str]) -> str:
    """A multi-label answer: the categories ticked, as a JSON list in sorted order, so that the same
    choice is always the same string (category names may hold any character, commas included)."""
    return json.dumps(sorted(set(categories)), ensure_ascii=False)


def decode_choices(answer: str, categories: Sequence[str]) -> frozenset[str]:
    """The categories a multi-label answer ticks; a value that is not a JSON list of strings, or
    names a category the batch did not ask about, is a :class:`ValueError` saying which."""
    try:
        chosen = json.loads(answer)
    except (json.JSONDecodeError, TypeError):
        raise ValueError(f"multi-label answer {answer!r} is not a JSON list of category names") from None
    if not isinstance(chosen, list) or not all(isinstance(name, str) for name in chosen):
        raise ValueError(f"multi-label answer {answer!r} is not a JSON list of category names")
    unknown = sorted(set(chosen) - set(categories))
    if unknown:
        raise ValueError(f"multi-label answer {answer!r} names {unknown[0]!r}, not one of the categories asked")
    return frozenset(chosen)


class AssignmentStatus(enum.StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"


class HitState(enum.StrEnum):
    OPEN = "open"  # still accepting or waiting for work
    COMPLETE = "complete"  # every requested assignment is submitted
    EXPIRED = "expired"  # no more work will arrive; what was submitted is all there is


@dataclass(frozen=True)
class HitItem:
    """One image shown inside a HIT. ``item_key`` is how answers refer back to it."""

    item_key: str
    uri: str


@dataclass(frozen=True)
class HitSpec:
    """One HIT to publish: a grid of images asking the same yes/no question.

    ``excluded_workers`` (platform worker ids) must never work on this HIT: the platform does not
    offer it to them, while they may still take the batch's other HITs. Audits and repairs use it
    to ask only workers who have not answered about these images before, so that the new answers
    are independent of the labels they check."""

    hit_key: str  # unique within its batch
    items: tuple[HitItem, ...]
    excluded_workers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class QualificationTest:
    """Questions with known answers that a worker must pass before working on a batch that carries
    the test. ``test_id`` names it across batches: a worker takes it once, and the result holds for
    every batch with the same id (the cascade uses one test per project and category)."""

    test_id: str
    question: str
    items: tuple[HitItem, ...]
    answers: Mapping[str, str]  # item key → YES or NO
    pass_mark: float  # share of the answers that must be right, in (0, 1]

    @property
    def needed(self) -> int:
        """Right answers needed to pass (rounded so that 0.7 of 10 needs 7, not 8)."""
        return math.ceil(round(self.pass_mark * len(self.items), 9))

    def grade(self, worker_id: str, given: Mapping[str, str]) -> QualificationResult:
        correct = sum(given.get(item.item_key) == self.answers[item.item_key] for item in self.items)
        return QualificationResult(worker_id, correct, len(self.items), correct >= self.needed)


@dataclass(frozen=True)
class QualificationResult:
    worker_id: str
    correct: int
    total: int
    passed: bool


@dataclass(frozen=True)
class HitBatch:
    """A batch of HITs, published atomically and idempotently under ``batch_id``."""

    batch_id: str
    category: str
    question: str
    hits: tuple[HitSpec, ...]
    assignments_per_hit: int
    reward_per_assignment: Decimal
    lifetime_seconds: int = 3 * 24 * 3600
    assignment_duration_seconds: int = 1800
    qualification: QualificationTest | None = None  # None: anyone not blocked may work
    # Non-empty: a multi-label batch. Each HIT shows one image and asks which of these categories
    # it shows (the multi-label template); an answer names the ones ticked (:func:`encode_choices`).
    # ``category`` then names the group the categories form.
    categories: tuple[str, ...] = ()

    @property
    def multi_label(self) -> bool:
        return bool(self.categories)


@dataclass(frozen=True)
class PublishedHit:
    hit_key: str
    hit_id: str  # the platform's own id


@dataclass(frozen=True)
class HitStatus:
    hit_id: str
    state: HitState
    submitted: int  # assignments submitted so far (any review status)
    requested: int


@dataclass(frozen=True)
class Assignment:
    """A worker's submitted answers for one HIT. ``answers`` maps item keys to :data:`YES` or
    :data:`NO`, or on a multi-label batch to the categories ticked, as :func:`encode_choices` writes
    them (``"[]"``: none of these)."""

    assignment_id: str
    hit_id: str
    worker_id: str
    status: AssignmentStatus
    answers: Mapping[str, str]
    accepted_at: float  # seconds since the epoch, platform time
    submitted_at: float
    raw: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CostEstimate:
    rewards: Decimal
    fees: Decimal

    @property
    def total(self) -> Decimal:
        return self.rewards + self.fees


class CrowdError(RuntimeError):
    """A platform refused or failed a request; the message says which and why.

    Platforms quote requests back in their error texts, so every text argument is passed through
    :func:`~lsun_crowd.redact.redact` here, before anything can raise, print or log it."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(arg) if isinstance(arg, str) else arg for arg in args))


class TransientCrowdError(CrowdError):
    """A failure that may pass if the call is made again: a timeout, throttling, a server error, or
    a response lost after the request took effect. Every protocol method is idempotent, so the
    cascade retries these under one bounded policy (:mod:`lsun_crowd.retrying`); ``retry_after``
    is the wait in seconds the platform asked for, where it named one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AlreadyApproved(CrowdError):
    """The work was approved already (on MTurk perhaps automatically, once its auto-approval delay
    ran out), so it can no longer be rejected."""


@runtime_checkable
class CrowdBackend(Protocol):
    """Everything the cascade needs from a crowd platform.

    Every method must be safe to call again after a crash: publishing a batch id twice, approving
    an approved assignment, or blocking a blocked worker changes nothing the second time.
    """

    name: str

    def publish(self, batch: HitBatch) -> list[PublishedHit]:
        """Create the batch's HITs, or return the ones an earlier call created."""
        ...

    def hit_status(self, hit_ids: Sequence[str]) -> list[HitStatus]: ...

    def list_assignments(self, hit_id: str) -> list[Assignment]:
        """Every submitted assignment of a HIT, whatever its review status."""
        ...

    def qualification_results(self, test_id: str) -> list[QualificationResult]:
        """Every worker who has taken the test so far, passed or not. Only those who passed may
        have submitted work on a batch carrying it."""
        ...

    def approve(self, assignment_id: str, feedback: str | None = None) -> None: ...

    def reject(self, assignment_id: str, feedback: str) -> None:
        """Reject submitted work; raises :class:`AlreadyApproved` for work approved before."""
        ...

    def pay_bonus(self, worker_id: str, assignment_id: str, amount: Decimal, reason: str, token: str) -> None:
        """Pay once per ``token``: a repeated token pays nothing more."""
        ...

    def block_worker(self, worker_id: str, reason: str) -> None: ...

    def unblock_worker(self, worker_id: str, reason: str) -> None: ...

    def expire(self, hit_ids: Sequence[str]) -> None:
        """Stop outstanding work on these HITs; submitted assignments stay reviewable."""
        ...

    def estimate_cost(self, batch: HitBatch) -> CostEstimate: ...

    def balance(self) -> Decimal | None:
        """Money available to spend, or ``None`` where the platform has no such notion."""
        ...


@dataclass(frozen=True)
class HitPreview:
    """One HIT rendered as the platform will show it, before anything is published. ``size`` is
    what the platform counts against its ``limit`` (``None`` where it has none); ``note`` is one
    line for the person looking (the mode, or what to change)."""

    html: str
    size: int | None = None
    limit: int | None = None
    note: str = ""


@runtime_checkable
class PreviewsHits(Protocol):
    """An adapter that renders its own HITs (its image URLs, its submit target, its size limit)
    implements this; ``lsun-crowd preview`` uses it, and renders the default grid otherwise."""

    def preview(self, batch: HitBatch) -> HitPreview:
        """The first HIT of ``batch`` as a worker will see it; asks the platform nothing."""
        ...


class SpendNotConfirmed(RuntimeError):
    """The person running the project did not agree to spend real money."""


@runtime_checkable
class ConfirmsSpend(Protocol):
    """An adapter that can spend real money implements this, so that a command publishing through
    it asks the person running it first."""

    def spend_confirmation(self) -> str | None:
        """A warning such as "live Mechanical Turk: real money" when publishing costs real money,
        ``None`` when it does not (a sandbox, a simulation)."""
        ...

    def confirm_spend(self) -> None:
        """The person running the project saw the warning and the most it may spend, and agreed.
        Until this is called, an adapter that spends real money publishes nothing."""
        ...


@runtime_checkable
class VirtualClock(Protocol):
    """A simulated platform whose time is the runner's: the runner counts its polls in the store and
    tells the platform before each one, so time passes only between polls (never while a run is
    stopped) and a poll repeated after a crash sees the platform exactly as the first attempt did."""

    def set_clock(self, polls: int) -> None:
        """Set the platform's time to that of the runner's ``polls``-th poll."""
        ...
