"""Drawing an audit's sample of final labels, stratified by category, source and value, and laying
out its crowd work: one audit job per category, its HITs kept from every worker who voted on their
images before (see :data:`lsun_crowd.publish.FRESH_WORKER_KINDS`).

*Strata.* Per category, the final labels of each source and value: ``human-positive``,
``human-negative``, ``model-positive`` (auto-positives) and ``model-negative`` (auto-negatives).
Humans are split by value too, so that precision and NPV are each a mean over strata with a fixed
sample size. Gold answers are known, not labeled, and are not audited.

*Allocation.* Half the sample is spread evenly over the non-empty strata (a floor, so that small
strata, such as a rare category's positives, are measured at all), the other half in proportion to
the strata's sizes (largest remainders), each capped at its stratum's size, with what a cap leaves
over spread the same way over the strata still below theirs. A sample at least as large as the
labels audits them all.

Everything here streams: strata are counted and summed by the database, and a stratum's drawn
positions are found by walking its labels in keyset-paginated chunks, so memory grows with the
sample, never with the pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lsun_crowd.context import Context, Stream, rng
from lsun_crowd.ids import audit_batch
from lsun_crowd.ledger import CHUNK
from lsun_crowd.publish import add_fresh_job
from lsun_crowd.schema import (
    Audit,
    AuditItem,
    AuditState,
    AuditStratum,
    Category,
    Job,
    JobKind,
    JobState,
    Label,
    LabelSource,
)

AUDIT_ITEMS_PER_HIT = 5  # small HITs: fewer images, fewer workers to keep off each


@dataclass(frozen=True)
class StratumKey:
    category_id: int
    source: str  # a LabelSource
    label: int

    @property
    def name(self) -> str:
        return stratum_name(self.source, self.label)


def stratum_name(source: str, label: int) -> str:
    return f"{source}-{'positive' if label else 'negative'}"


STRATA = tuple(stratum_name(source, label) for source in (LabelSource.HUMAN, LabelSource.MODEL) for label in (1, 0))


@dataclass(frozen=True)
class StratumCount:
    key: StratumKey
    size: int
    confidence_sum: float
    confidence_square_sum: float


class AuditInputError(ValueError):
    """The audit cannot be drawn as asked; the message says why."""


def count_strata(session: Session, category_ids: list[int]) -> list[StratumCount]:
    rows = session.execute(
        select(
            Label.category_id,
            Label.source,
            Label.label,
            func.count(Label.id),
            func.sum(Label.confidence),
            func.sum(Label.confidence * Label.confidence),
        )
        .where(Label.category_id.in_(category_ids), Label.source.in_([LabelSource.HUMAN, LabelSource.MODEL]))
        .group_by(Label.category_id, Label.source, Label.label)
    ).all()
    found = [
        StratumCount(StratumKey(int(c), str(s), int(v)), int(n), float(total or 0), float(square or 0))
        for c, s, v, n, total, square in rows
    ]
    return sorted(found, key=lambda row: (row.key.category_id, STRATA.index(row.key.name)))


def allocate(sizes: list[int], sample: int) -> list[int]:
    """Sample sizes per stratum: an even floor for half the sample, the rest proportional."""
    live = [index for index, size in enumerate(sizes) if size > 0]
    taken = [0] * len(sizes)
    if sum(sizes) <= sample:
        return list(sizes)
    floor = max(1, sample // (2 * len(live)))
    for index in live:
        taken[index] = min(sizes[index], floor)
    while sum(taken) < sample:
        open_ = [index for index in live if taken[index] < sizes[index]]
        left = sample - sum(taken)
        room = sum(sizes[index] - taken[index] for index in open_)
        exact = {index: left * (sizes[index] - taken[index]) / room for index in open_}
        shares = {index: min(int(exact[index]), sizes[index] - taken[index]) for index in open_}
        short = left - sum(shares.values())
        for index in sorted(open_, key=lambda i: (-(exact[i] - int(exact[i])), i)):
            if short <= 0:
                break
            if taken[index] + shares[index] < sizes[index]:
                shares[index] += 1
                short -= 1
        for index, share in shares.items():
            taken[index] += share
        if not any(shares.values()):
            break
    return taken


def _stratum_rows(session: Session, key: StratumKey) -> Iterator[list[tuple[int, float]]]:
    after = -1
    while True:
        rows = session.execute(
            select(Label.id, Label.item_id, Label.confidence)
            .where(
                Label.category_id == key.category_id,
                Label.source == key.source,
                Label.label == key.label,
                Label.id > after,
            )
            .order_by(Label.id)
            .limit(CHUNK)
        ).all()
        if not rows:
            return
        yield [(int(item), float(confidence)) for _, item, confidence in rows]
        after = int(rows[-1][0])


def draw_stratum(session: Session, key: StratumKey, size: int, take: int, seed: int) -> list[tuple[int, float]]:
    """``take`` labels of the stratum drawn without replacement, from the seed alone."""
    generator = rng(seed, key.category_id, STRATA.index(key.name), Stream.AUDIT_STRATUM)
    wanted = np.sort(generator.choice(size, size=take, replace=False)) if take < size else np.arange(size)
    found: list[tuple[int, float]] = []
    offset = cursor = 0
    for rows in _stratum_rows(session, key):
        end = offset + len(rows)
        while cursor < len(wanted) and wanted[cursor] < end:
            found.append(rows[int(wanted[cursor]) - offset])
            cursor += 1
        offset = end
        if cursor == len(wanted):
            break
    return found


def create_audit(ctx: Context, sample: int, seed: int, votes: int, alpha: float) -> int:
    """Draw the sample, store it with its strata, and lay out one audit job per category, in one
    transaction: nothing is published before the sample is in the store."""
    categories = ctx.config.project.categories
    with ctx.store.session() as session:
        ids = dict(session.execute(select(Category.name, Category.id).where(Category.name.in_(categories))).all())
        strata = count_strata(session, [ids[name] for name in categories if name in ids])
        if not strata:
            raise AuditInputError("the project has no final labels yet: run the cascade first (`lsun-crowd run`)")
        allocation = allocate([row.size for row in strata], sample)
        audit = Audit(sample_size=sample, seed=seed, votes_per_item=votes, alpha=alpha, state=AuditState.SAMPLED)
        session.add(audit)
        session.flush()
        by_category: dict[int, list[AuditItem]] = {}
        for row, take in zip(strata, allocation, strict=True):
            session.add(
                AuditStratum(
                    audit_id=audit.id,
                    category_id=row.key.category_id,
                    stratum=row.key.name,
                    size=row.size,
                    sampled=take,
                    confidence_sum=row.confidence_sum,
                    confidence_square_sum=row.confidence_square_sum,
                )
            )
            if take == 0:
                continue
            for item_id, confidence in draw_stratum(session, row.key, row.size, take, seed):
                by_category.setdefault(row.key.category_id, []).append(
                    AuditItem(
                        audit_id=audit.id,
                        item_id=item_id,
                        category_id=row.key.category_id,
                        stratum=row.key.name,
                        label=row.key.label,
                        confidence=confidence,
                    )
                )
        names = {category_id: name for name, category_id in ids.items()}
        for category_id, items in sorted(by_category.items()):
            job = _lay_out_audit_job(ctx, session, audit, category_id, names[category_id], items, seed)
            for item in items:
                item.job_id = job.id
            session.add_all(items)
        return int(audit.id)


def _lay_out_audit_job(
    ctx: Context, session: Session, audit: Audit, category_id: int, category: str, items: list[AuditItem], seed: int
) -> Job:
    """One job of small HITs; images whose earlier voters overlap share a HIT, so that each HIT
    keeps as few workers away as it can."""
    job = Job(
        category_id=category_id,
        round_id=None,
        kind=JobKind.AUDIT,
        sequence=0,
        batch_id=audit_batch(ctx.project_key(), category, audit.sample_size, seed),
        state=JobState.PENDING,
        assignments_per_hit=audit.votes_per_item,
    )
    generator = rng(seed, category_id, audit.id, Stream.AUDIT_ORDER)
    ids = [item.item_id for item in items]
    return add_fresh_job(ctx, session, category, category_id, job, ids, AUDIT_ITEMS_PER_HIT, generator)
