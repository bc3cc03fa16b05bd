"""What the report shows, read from the store as aggregates: every query groups in SQL and returns
rows per round, category, worker or audit stratum, never per image, so that the report of a
million-image pool reads as much as the report of a small one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from lsun_crowd import ledger
from lsun_crowd.ids import OriginKind, of_kind
from lsun_crowd.ledger import WorkerRecord, worker_records
from lsun_crowd.schema import (
    AssignmentRow,
    Audit,
    AuditResult,
    Category,
    ChoiceVote,
    Gold,
    Hit,
    Item,
    Job,
    Label,
    LabelEvent,
    LabelSource,
    Repair,
    RepairPass,
    Round,
    RoundTest,
    Spend,
    Vote,
)
from lsun_crowd.store import Store


@dataclass(frozen=True)
class RoundRow:
    """One round of one category: what it labeled, what it cost, and what was left."""

    round_id: int
    category_id: int
    category: str
    number: int
    state: str
    human_only: bool
    high_threshold: float | None  # logits
    low_threshold: float | None
    notes: str
    human_positive: int = 0  # current labels set by this round
    human_negative: int = 0
    model_positive: int = 0
    model_negative: int = 0
    unlabeled_after: int = 0  # of today's readable images, those no label of this round or earlier covers
    votes: int = 0  # every answer of the round's HITs, gold answers included
    gold_votes: int = 0
    spend: Decimal = Decimal(0)

    @property
    def resolved(self) -> int:
        return self.human_positive + self.human_negative + self.model_positive + self.model_negative


@dataclass(frozen=True)
class CategoryTotals:
    category_id: int
    category: str
    positive: int
    negative: int
    human: int  # current labels from people (gold included)
    model: int
    unlabeled: int


@dataclass(frozen=True)
class OtherWork:
    """Crowd work outside any round (audits, repairs), or money booked to no job."""

    category: str  # "" where the work names no category
    kind: str
    votes: int
    spend: Decimal


@dataclass(frozen=True)
class RepairCount:
    """A category's passes of label-error repair, and what became of the labels they flagged."""

    category: str
    passes: int
    scored: int  # human labels scored out of fold, over every pass
    flagged: int
    states: dict[str, int]  # a RepairState -> labels in it


@dataclass(frozen=True)
class RepairSummary:
    categories: list[RepairCount] = field(default_factory=list)
    # (category, "repair" or "conflict", label events written): labels revised after people looked again
    revisions: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class AuditRow:
    audit_id: int
    category: str  # "overall" where the row covers every category
    stratum: str
    metric: str
    n: int
    estimate: float | None
    exact_low: float | None
    exact_high: float | None
    ppi_low: float | None
    ppi_high: float | None


@dataclass(frozen=True)
class AuditSummary:
    audits: int = 0  # audits with results; only the latest one's are kept here
    audit_id: int | None = None
    level: float | None = None  # the intervals' confidence level
    sample: int = 0  # labels the latest audit asked for
    rows: list[AuditRow] = field(default_factory=list)


@dataclass(frozen=True)
class ReportData:
    categories: list[CategoryTotals]
    rounds: list[RoundRow]
    tests: dict[int, list[RoundTest]]  # round id -> its rows, by side
    other_work: list[OtherWork]
    workers: list[WorkerRecord]
    repairs: RepairSummary
    audit: AuditSummary
    images: int  # readable images in the pool
    spent: Decimal = Decimal(0)  # every spend row: what status and the store add up to (ledger.spending)


def gather(store: Store, configured_categories: list[str]) -> ReportData:
    with store.session() as session:
        names = _category_names(session, configured_categories)
        images = int(session.scalar(select(func.count(Item.id)).where(Item.problem.is_(None))) or 0)
        rounds = _rounds(session, names, images)
        return ReportData(
            categories=_category_totals(session, names, images),
            rounds=rounds,
            tests=_tests(session),
            other_work=_other_work(session, names),
            workers=worker_records(session),
            repairs=_repairs(session, names),
            audit=_audit(session, names),
            images=images,
            spent=ledger.spending(session).total,
        )


def rounds_by_category(rounds: list[RoundRow]) -> dict[str, list[RoundRow]]:
    grouped: dict[str, list[RoundRow]] = {}
    for row in rounds:
        grouped.setdefault(row.category, []).append(row)
    return grouped


def _category_names(session: Session, configured: list[str]) -> dict[int, str]:
    """Categories the store knows, in the order of the configuration, then by name."""
    known: dict[int, str] = {int(i): str(n) for i, n in session.execute(select(Category.id, Category.name))}
    order = {name: position for position, name in enumerate(configured)}
    return dict(sorted(known.items(), key=lambda pair: (order.get(pair[1], len(order)), pair[1])))


def _category_totals(session: Session, names: dict[int, str], images: int) -> list[CategoryTotals]:
    counts: dict[tuple[int, str, int], int] = {
        (int(c), str(s), int(v)): int(n)
        for c, s, v, n in session.execute(
            select(Label.category_id, Label.source, Label.label, func.count()).group_by(
                Label.category_id, Label.source, Label.label
            )
        )
    }
    gold: dict[tuple[int, int], int] = {
        (int(c), int(a)): int(n)
        for c, a, n in session.execute(
            select(Gold.category_id, Gold.answer, func.count()).group_by(Gold.category_id, Gold.answer)
        )
    }
    totals = []
    for category_id, name in names.items():

        def count(source: str | None = None, label: int | None = None, category_id: int = category_id) -> int:
            return sum(
                n for (c, s, v), n in counts.items() if c == category_id and source in (None, s) and label in (None, v)
            )

        gold_positive, gold_negative = gold.get((category_id, 1), 0), gold.get((category_id, 0), 0)
        positive, negative = count(label=1) + gold_positive, count(label=0) + gold_negative
        model = count(LabelSource.MODEL)
        totals.append(
            CategoryTotals(
                category_id,
                name,
                positive,
                negative,
                positive + negative - model,
                model,
                max(images - positive - negative, 0),
            )
        )
    return totals


def _labels_by_round(session: Session) -> tuple[dict[tuple[int, str, int], int], dict[int, int]]:
    """Current labels counted by (round, source, label), and per category those no round set."""
    # A label revised by a repair or a conflict belongs to no round any more: it counts, with its
    # current value, for the round that first labeled the image.
    first_round = (
        select(func.min(LabelEvent.round_id))
        .where(LabelEvent.item_id == Label.item_id, LabelEvent.category_id == Label.category_id)
        .scalar_subquery()
    )
    attributed = select(
        func.coalesce(Label.round_id, first_round).label("round_id"), Label.category_id, Label.source, Label.label
    ).subquery()
    labels: dict[tuple[int, str, int], int] = {}
    outside_rounds: dict[int, int] = {}  # labels no round ever set
    for r, c, s, v, n in session.execute(
        select(
            attributed.c.round_id, attributed.c.category_id, attributed.c.source, attributed.c.label, func.count()
        ).group_by(attributed.c.round_id, attributed.c.category_id, attributed.c.source, attributed.c.label)
    ):
        if r is None:
            outside_rounds[int(c)] = outside_rounds.get(int(c), 0) + int(n)
        else:
            labels[(int(r), str(s), int(v))] = int(n)
    return labels, outside_rounds


def _votes_by_round(session: Session) -> dict[int, tuple[int, int]]:
    """Each round's votes, and of those its gold answers."""
    return {
        int(r or 0): (int(n), int(g or 0))
        for r, n, g in session.execute(
            select(Hit.round_id, func.count(Vote.id), func.sum(case((Vote.is_gold, 1), else_=0)))
            .select_from(Vote)
            .join(AssignmentRow, AssignmentRow.id == Vote.assignment_id)
            .join(Hit, Hit.id == AssignmentRow.hit_id)
            .where(Hit.round_id.is_not(None))
            .group_by(Hit.round_id)
        )
    }


def _spend_by_round(session: Session) -> dict[int, Decimal]:
    """What each round spent."""
    return {
        int(r or 0): Decimal(amount or 0)
        for r, amount in session.execute(
            select(Spend.round_id, func.sum(Spend.amount)).where(Spend.round_id.is_not(None)).group_by(Spend.round_id)
        )
    }


def _rounds(session: Session, names: dict[int, str], images: int) -> list[RoundRow]:
    labels, outside_rounds = _labels_by_round(session)
    votes, spend = _votes_by_round(session), _spend_by_round(session)
    gold_per_category: dict[int, int] = {
        int(c): int(n) for c, n in session.execute(select(Gold.category_id, func.count()).group_by(Gold.category_id))
    }
    rows: list[RoundRow] = []
    labeled_so_far: dict[int, int] = {}
    for round_ in session.scalars(select(Round).order_by(Round.category_id, Round.number)):
        if round_.category_id not in names:
            continue

        def labeled(source: str, label: int, round_id: int = round_.id) -> int:
            return labels.get((round_id, source, label), 0)

        human_positive = labeled(LabelSource.HUMAN, 1) + labeled(LabelSource.GOLD, 1)
        human_negative = labeled(LabelSource.HUMAN, 0) + labeled(LabelSource.GOLD, 0)
        model_positive, model_negative = labeled(LabelSource.MODEL, 1), labeled(LabelSource.MODEL, 0)
        covered = labeled_so_far.get(round_.category_id, 0) + human_positive + human_negative
        covered += model_positive + model_negative
        labeled_so_far[round_.category_id] = covered
        before = gold_per_category.get(round_.category_id, 0) + outside_rounds.get(round_.category_id, 0)
        round_votes, gold_votes = votes.get(round_.id, (0, 0))
        rows.append(
            RoundRow(
                round_id=round_.id,
                category_id=round_.category_id,
                category=names[round_.category_id],
                number=round_.number,
                state=round_.state,
                human_only=bool(round_.human_only),
                high_threshold=round_.high_threshold,
                low_threshold=round_.low_threshold,
                notes=round_.notes or "",
                human_positive=human_positive,
                human_negative=human_negative,
                model_positive=model_positive,
                model_negative=model_negative,
                unlabeled_after=max(images - before - covered, 0),
                votes=round_votes,
                gold_votes=gold_votes,
                spend=spend.get(round_.id, Decimal(0)),
            )
        )
    return rows


def _tests(session: Session) -> dict[int, list[RoundTest]]:
    """The ``round_tests`` rows (read once, detached), by round, each round's by side."""
    tests: dict[int, list[RoundTest]] = {}
    for test in session.scalars(select(RoundTest).order_by(RoundTest.round_id, RoundTest.side)):
        tests.setdefault(test.round_id, []).append(test)
    return tests


def _other_work(session: Session, names: dict[int, str]) -> list[OtherWork]:
    """Votes and money of jobs outside rounds, by category and kind; money booked to no round or job."""
    votes: dict[tuple[int | None, str], int] = {
        (None if c is None else int(c), str(k)): int(n)
        for c, k, n in session.execute(
            select(Job.category_id, Job.kind, func.count(Vote.id))
            .select_from(Vote)
            .join(AssignmentRow, AssignmentRow.id == Vote.assignment_id)
            .join(Hit, Hit.id == AssignmentRow.hit_id)
            .join(Job, Job.id == Hit.job_id)
            .where(Hit.round_id.is_(None))
            .group_by(Job.category_id, Job.kind)
        )
    }
    # Multi-label answers (one per image, naming every category ticked) count as one vote each.
    for c, k, n in session.execute(
        select(Job.category_id, Job.kind, func.count(ChoiceVote.id))
        .select_from(ChoiceVote)
        .join(Job, Job.id == ChoiceVote.job_id)
        .group_by(Job.category_id, Job.kind)
    ):
        key = (None if c is None else int(c), str(k))
        votes[key] = votes.get(key, 0) + int(n)
    spend: dict[tuple[int | None, str], Decimal] = {
        (None if c is None else int(c), str(k) if k is not None else "unattributed"): Decimal(a or 0)
        for c, k, a in session.execute(
            select(Job.category_id, Job.kind, func.sum(Spend.amount))
            .select_from(Spend)
            .outerjoin(Job, Job.id == Spend.job_id)
            .where(Spend.round_id.is_(None))
            .group_by(Job.category_id, Job.kind)
        )
    }
    keys = sorted(set(votes) | set(spend), key=lambda key: (key[0] is None, key[0] or 0, key[1]))
    return [
        OtherWork(
            names.get(category, "") if category is not None else "",
            kind,
            votes.get((category, kind), 0),
            spend.get((category, kind), Decimal(0)),
        )
        for category, kind in keys
    ]


def _repairs(session: Session, names: dict[int, str]) -> RepairSummary:
    repair, conflict = OriginKind.REPAIR, OriginKind.CONFLICT
    kind = case((LabelEvent.origin.like(of_kind(repair)), str(repair)), else_=str(conflict))
    revisions = [
        (names.get(int(c), str(c)), str(k), int(n))
        for c, k, n in session.execute(
            select(LabelEvent.category_id, kind, func.count())
            .where(LabelEvent.origin.like(of_kind(repair)) | LabelEvent.origin.like(of_kind(conflict)))
            .group_by(LabelEvent.category_id, kind)
            .order_by(LabelEvent.category_id, kind)
        )
    ]
    passes = {
        int(c): (int(n), int(scored or 0), int(flagged or 0))
        for c, n, scored, flagged in session.execute(
            select(
                RepairPass.category_id, func.count(), func.sum(RepairPass.scored), func.sum(RepairPass.flagged)
            ).group_by(RepairPass.category_id)
        )
    }
    states: dict[int, dict[str, int]] = {}
    for c, state, n in session.execute(
        select(Repair.category_id, Repair.state, func.count()).group_by(Repair.category_id, Repair.state)
    ):
        states.setdefault(int(c), {})[str(state)] = int(n)
    categories = [c for c in names if c in passes or c in states]
    counts = []
    for c in categories:
        count, scored, flagged = passes.get(c, (0, 0, 0))
        counts.append(RepairCount(names[c], count, scored, flagged, states.get(c, {})))
    return RepairSummary(counts, revisions)


def _audit(session: Session, names: dict[int, str]) -> AuditSummary:
    """The results of the latest audit that has any."""
    audits = int(session.scalar(select(func.count(func.distinct(AuditResult.audit_id)))) or 0)
    latest = session.execute(
        select(Audit.id, Audit.alpha, Audit.sample_size).where(
            Audit.id == select(func.max(AuditResult.audit_id)).scalar_subquery()
        )
    ).first()
    if latest is None:
        return AuditSummary()
    audit_id, alpha, sample_size = latest
    rows = [
        AuditRow(
            int(audit_id),
            "overall" if result.category_id is None else names.get(result.category_id, str(result.category_id)),
            result.stratum,
            result.metric,
            result.n,
            result.estimate,
            result.exact_low,
            result.exact_high,
            result.ppi_low,
            result.ppi_high,
        )
        for result in session.scalars(select(AuditResult).where(AuditResult.audit_id == audit_id))
    ]
    rows.sort(key=lambda r: (r.category != "overall", r.category, r.stratum != "all", r.stratum, r.metric))
    level = 1 - float(alpha)
    return AuditSummary(audits=audits, audit_id=int(audit_id), level=level, sample=int(sample_size), rows=rows)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
