"""The formats of batch ids and label origins: built, and matched, here only.

A **batch id** names one job's HITs on the crowd platform, which publishes a batch once however
often it is asked (``project:category:kind...``: the project key keeps two projects sharing an
account apart). A **label origin** names the step that wrote a label event, ``kind:...``:
:func:`lsun_crowd.ledger.record_labels` decides an image once per origin, so a replayed step adds
nothing, and readers tell the steps apart by the kind (:func:`of_kind`).
"""

from __future__ import annotations

from enum import StrEnum


def round_batch(project: str, category: str, number: int, follow_up: int = 0) -> str:
    """Round ``number``'s first batch, or its ``follow_up``-th batch of extra votes."""
    base = f"{project}:{category}:r{number}"
    return f"{base}:f{follow_up}" if follow_up else base


def audit_batch(project: str, category: str, sample_size: int, seed: int, wave: int = 0) -> str:
    """An audit's batch, or its ``wave``-th batch of follow-up votes."""
    base = f"{project}:{category}:audit:n{sample_size}:s{seed}"
    return f"{base}:f{wave}" if wave else base


def repair_batch(project: str, category: str, pass_id: int, stage: int) -> str:
    """Stage ``stage`` of repair pass ``pass_id``."""
    return f"{project}:{category}:repair:p{pass_id}:s{stage}"


def repair_pass_batches(pass_id: int) -> str:
    """A SQL ``LIKE`` pattern matching every batch id of repair pass ``pass_id``."""
    return f"%:repair:p{pass_id}:s%"


def conflict_batch(project: str, group: str, number: int) -> str:
    """Job ``number`` of a single-label group's conflicts."""
    return f"{project}:conflicts:{group}:j{number}"


class OriginKind(StrEnum):
    """The steps that write label events."""

    ROUND = "round"  # a round's human labels and its split's model labels
    CERTIFY = "certify"  # a certification withdrawing model labels
    CONFLICT = "conflict"  # a single-label group's conflict settled by people
    REPAIR = "repair"  # a repair stage's revised labels


def round_origin(round_id: int, step: str) -> str:
    """Labels a round wrote: ``human``, or its split's (``split``, ``final``, ``reopen``...)."""
    return f"{OriginKind.ROUND}:{round_id}:{step}"


def certify_origin(round_id: int | str, step: str = "") -> str:
    """A certification's withdrawals: its sample's (``sample``), or the labels looser than what it
    certified (no step). ``round_id`` may name the round before it exists (``r12``)."""
    return f"{OriginKind.CERTIFY}:{round_id}:{step}" if step else f"{OriginKind.CERTIFY}:{round_id}"


def conflict_origin(job_id: int) -> str:
    return f"{OriginKind.CONFLICT}:{job_id}"


def repair_origin(job_id: int) -> str:
    return f"{OriginKind.REPAIR}:{job_id}"


def of_kind(kind: OriginKind) -> str:
    """A SQL ``LIKE`` pattern matching every origin of ``kind``."""
    return f"{kind}:%"
