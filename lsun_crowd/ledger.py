"""Typed, set-based reads and writes over the store that more than one step needs.

Nothing here binds a parameter list that grows with the pool: the pool is selected by predicate
(``NOT EXISTS`` against indexed tables) and streamed in keyset-paginated chunks, and bulk writes go
out in chunks of :data:`CHUNK` rows. "What is the current label of this image for this category" is
answered here and nowhere else: :func:`current_label` / the ``labels`` table, which
:func:`record_labels` keeps in the same transaction as the append-only :class:`LabelEvent` history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import ColumnElement, Select, delete, func, insert, literal, select, text, update
from sqlalchemy.orm import Session

from lsun_crowd.schema import (
    AssignmentRow,
    Gold,
    Hit,
    Item,
    Job,
    JobState,
    Label,
    LabelCount,
    LabelEvent,
    LabelSource,
    OpenItem,
    PoolMark,
    Round,
    RoundItem,
    RoundState,
    Spend,
    Worker,
)
from lsun_crowd.store import add_to_counts, insert_ignoring_duplicates, insert_returning

COUNT_KEYS = ("category_id", "label", "source")
CHUNK = 20_000  # rows per bulk write or streamed read; far below every database's parameter limit


def chunks(rows: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# -- the pool ---------------------------------------------------------------------------------------
#
# A category's pool is read in two parts, in id order: its settled part, the ``open_items`` rows up
# to its mark (what the last split left open), and the images ingested after the mark, read from
# the items table. So a round after the first reads what is left of the pool, not the whole table.
# Every row of either part is checked against the live predicate (:func:`in_pool`): the open rows
# are a superset kept for speed, and a stale one costs a lookup, never a wrong answer.
#
# Each part is read in windows: the next ``size`` rows of one table's primary key after the last
# one read, each row's pool test computed beside it, and the rows that fail it dropped here. A
# window's query has no filter besides the key's range, so its plan is a range scan of the key
# whatever the database's statistics say. (With the test in the WHERE clause, PostgreSQL, whose
# statistics had not yet seen a freshly ingested million images, expected a few hundred rows to
# pass it and sorted all of the remaining pool for every page: a pass over the pool grew with its
# square.)


def _absent(statement: Select[int]) -> ColumnElement[bool]:
    """``NOT EXISTS (statement)`` as an index probe per row: ``OFFSET 0`` keeps PostgreSQL from
    turning it into a hash of the whole subquery, which its statistics can make look cheaper."""
    return ~statement.offset(0).exists()


def _undecided(category_id: int, item: Any) -> ColumnElement[bool]:
    """The image ``item`` has no label for the category and is not gold for it."""
    labeled = select(literal(1)).where(Label.item_id == item, Label.category_id == category_id)
    gold = select(literal(1)).where(Gold.item_id == item, Gold.category_id == category_id)
    return _absent(labeled) & _absent(gold)


def _not_waiting(category_id: int, item: Any) -> ColumnElement[bool]:
    """The image ``item`` is not in an unfinished round of the category. Those rounds' images are
    a few samples, whatever the pool: PostgreSQL may hash them once per query, as it prefers."""
    return ~(
        select(literal(1))
        .select_from(RoundItem)
        .join(Round, Round.id == RoundItem.round_id)
        .where(RoundItem.item_id == item, Round.category_id == category_id)
        .where(Round.state.notin_([RoundState.DONE, RoundState.STOPPED]))
        .exists()
    )


def in_pool(category_id: int) -> ColumnElement[bool]:
    """Images with no label for the category, not gold for it, readable, and not waiting in an
    unfinished round of it: what a round may sample from and the model may label."""
    return Item.problem.is_(None) & _undecided(category_id, Item.id) & _not_waiting(category_id, Item.id)


def settled_through(session: Session, category_id: int) -> int:
    """The category's pool mark: the last item id its open rows account for (0: none)."""
    return int(session.scalar(select(PoolMark.settled_through).where(PoolMark.category_id == category_id)) or 0)


def _settled_window(category_id: int, after: int, through: int, size: int) -> Select[int, str, bool]:
    """The next ``size`` open rows after ``after``: (item id, sha256 if readable, in the pool)."""
    readable_sha = select(Item.sha256).where(Item.id == OpenItem.item_id, Item.problem.is_(None)).scalar_subquery()
    return (
        select(
            OpenItem.item_id,
            readable_sha,
            _undecided(category_id, OpenItem.item_id) & _not_waiting(category_id, OpenItem.item_id),
        )
        .where(OpenItem.category_id == category_id, OpenItem.item_id > after, OpenItem.item_id <= through)
        .order_by(OpenItem.item_id)
        .limit(size)
    )


def _newer_window(category_id: int, after: int, size: int) -> Select[int, str, bool]:
    """The next ``size`` images after ``after``: (item id, sha256, in the pool)."""
    return select(Item.id, Item.sha256, in_pool(category_id)).where(Item.id > after).order_by(Item.id).limit(size)


def _windows(
    session: Session, window: Callable[[int], Select[int, str, bool]], after: int
) -> Iterator[tuple[int, str]]:
    """The pool's rows of every ``window(after)``, each window starting after the last read."""
    while rows := session.execute(window(after)).all():
        yield from ((int(item), str(sha)) for item, sha, open_ in rows if open_ and sha is not None)
        after = int(rows[-1][0])


def _open_rows(session: Session, category_id: int, size: int) -> Iterator[tuple[int, str]]:
    """Every image of the category's pool in id order, read a window of ``size`` rows at a time:
    the open rows up to the mark, then the images after it."""
    through = settled_through(session, category_id)
    yield from _windows(session, lambda after: _settled_window(category_id, after, through, size), 0)
    yield from _windows(session, lambda after: _newer_window(category_id, after, size), through)


def pool_size(session: Session, category_id: int) -> int:
    through = settled_through(session, category_id)
    settled = (
        select(func.count())
        .select_from(OpenItem)
        .join(Item, Item.id == OpenItem.item_id)
        .where(OpenItem.category_id == category_id, OpenItem.item_id <= through, in_pool(category_id))
    )
    newer = select(func.count()).select_from(Item).where(Item.id > through, in_pool(category_id))
    return int(session.scalar(settled) or 0) + int(session.scalar(newer) or 0)


def iter_pool(session: Session, category_id: int, size: int = CHUNK) -> Iterator[list[tuple[int, str]]]:
    """``(item id, sha256)`` of the pool in id order, in chunks of ``size`` (the last may be
    shorter). Each window is read when the chunk before has been taken, so memory holds at most
    two windows, and a caller may label a chunk's images before it asks for the next."""
    chunk: list[tuple[int, str]] = []
    for row in _open_rows(session, category_id, size):
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def pool_at(session: Session, category_id: int, positions: NDArray[np.int64]) -> NDArray[np.int64]:
    """The pool's item ids at sorted ``positions`` of its id order, streamed: memory grows with the
    sample, not the pool."""
    wanted = np.sort(np.asarray(positions, dtype=np.int64))
    found: list[int] = []
    offset = 0
    cursor = 0
    for rows in iter_pool(session, category_id):
        end = offset + len(rows)
        while cursor < len(wanted) and wanted[cursor] < end:
            found.append(rows[int(wanted[cursor]) - offset][0])
            cursor += 1
        offset = end
        if cursor == len(wanted):
            break
    return np.array(found, dtype=np.int64)


def settle_pool(session: Session, category_id: int) -> None:
    """Bring the category's open rows up to date, in the caller's transaction: drop those that
    gained a label or became gold, add the images ingested since the mark that are still open,
    and move the mark to the newest image. Its work follows the open rows and the new images, so
    a split calls it once, after its labels: the first settles the whole table, later ones what
    is left."""
    if session.get_bind().dialect.name == "postgresql":
        # Wait for ingests in flight, and hold new ones off until commit: an image committed later
        # with an id under the new mark would be missing from both parts.
        session.execute(text("LOCK TABLE items IN SHARE MODE"))
    through = settled_through(session, category_id)
    newest = int(session.scalar(select(func.max(Item.id))) or 0)
    session.execute(
        delete(OpenItem).where(OpenItem.category_id == category_id, ~_undecided(category_id, OpenItem.item_id))
    )
    session.execute(
        insert(OpenItem).from_select(
            ["category_id", "item_id"],
            select(literal(category_id), Item.id).where(
                Item.id > through, Item.id <= newest, _undecided(category_id, Item.id)
            ),
        )
    )
    session.merge(PoolMark(category_id=category_id, settled_through=newest))


# -- labels -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewLabel:
    item_id: int
    label: int  # 1 positive, 0 negative
    confidence: float
    votes: int = 0
    model_share: float = 0.0  # the model's part in a human label (lsun_crowd.consensus.model_share)

    def columns(self) -> dict[str, Any]:
        """The columns a label row and its event share."""
        return {
            "item_id": self.item_id,
            "label": self.label,
            "confidence": self.confidence,
            "votes": self.votes,
            "model_share": self.model_share,
        }


@dataclass(frozen=True)
class CurrentLabel:
    label: int
    source: LabelSource
    round_id: int | None
    confidence: float
    votes: int


def current_label(session: Session, item_id: int, category_id: int) -> CurrentLabel | None:
    """The image's current label for the category, or ``None`` while it has none (gold answers are
    known, not labeled: see :class:`~lsun_crowd.schema.Gold`)."""
    row = session.execute(
        select(Label.label, Label.source, Label.round_id, Label.confidence, Label.votes).where(
            Label.item_id == item_id, Label.category_id == category_id
        )
    ).first()
    if row is None:
        return None
    label, source, round_id, confidence, votes = row
    return CurrentLabel(label, LabelSource(source), round_id, confidence, votes)


def record_labels(
    session: Session,
    category_id: int,
    labels: Iterable[NewLabel],
    *,
    source: LabelSource,
    origin: str,
    round_id: int | None = None,
    job_id: int | None = None,
    reason: str = "",
) -> int:
    """Append label events and set them as current where the image has no label yet. ``origin``
    (e.g. ``round:12:human``) decides an image once: replaying the same step adds nothing.
    Returns the number of images that gained a current label."""
    added = 0
    batch: list[NewLabel] = []
    for label in labels:
        batch.append(label)
        if len(batch) == CHUNK:
            added += _write_labels(session, category_id, batch, source, origin, round_id, job_id, reason)
            batch = []
    if batch:
        added += _write_labels(session, category_id, batch, source, origin, round_id, job_id, reason)
    return added


def _write_labels(
    session: Session,
    category_id: int,
    batch: list[NewLabel],
    source: LabelSource,
    origin: str,
    round_id: int | None,
    job_id: int | None,
    reason: str,
) -> int:
    common = {"category_id": category_id, "source": source, "round_id": round_id}
    insert_ignoring_duplicates(
        session,
        LabelEvent,
        [common | label.columns() | {"origin": origin, "job_id": job_id, "reason": reason} for label in batch],
    )
    added = insert_returning(
        session,
        Label,
        [common | label.columns() for label in batch],
        Label.label,
    )
    positives = sum(added)
    add_to_counts(
        session,
        LabelCount,
        COUNT_KEYS,
        {(category_id, 1, source): positives, (category_id, 0, source): len(added) - positives},
    )
    return len(added)


def revise_labels(
    session: Session,
    category_id: int,
    labels: Iterable[NewLabel],
    *,
    source: LabelSource,
    origin: str,
    job_id: int | None = None,
    reason: str = "",
) -> int:
    """Append label events that replace the current label, whatever it was (a conflict or a repair
    settled by people), keeping the history. ``origin`` decides an image once, as in
    :func:`record_labels`: a replayed step writes the same events and the same current labels.
    Returns the number of images whose current label was set."""
    revised = 0
    for batch in chunks(list(labels)):
        insert_ignoring_duplicates(
            session,
            LabelEvent,
            [
                label.columns()
                | {
                    "category_id": category_id,
                    "source": source,
                    "origin": origin,
                    "round_id": None,
                    "job_id": job_id,
                    "reason": reason,
                }
                for label in batch
            ],
        )
        current = {
            int(item): (row_id, old_label, old_source)
            for item, row_id, old_label, old_source in session.execute(
                select(Label.item_id, Label.id, Label.label, Label.source).where(
                    Label.category_id == category_id, Label.item_id.in_([label.item_id for label in batch])
                )
            )
        }
        counts: dict[tuple[int, int, str], int] = {}
        for label in batch:
            values = {key: value for key, value in label.columns().items() if key != "item_id"} | {"source": source}
            if label.item_id in current:
                row_id, old_label, old_source = current[label.item_id]
                session.execute(update(Label).where(Label.id == row_id).values(round_id=None, **values))
                counts[(category_id, old_label, old_source)] = counts.get((category_id, old_label, old_source), 0) - 1
                current[label.item_id] = (row_id, label.label, source)
            else:
                session.add(Label(item_id=label.item_id, category_id=category_id, round_id=None, **values))
            counts[(category_id, label.label, source)] = counts.get((category_id, label.label, source), 0) + 1
            revised += 1
        session.flush()
        add_to_counts(session, LabelCount, COUNT_KEYS, counts)
    return revised


WITHDRAWN = -1  # the label of an event that takes an image's label away, back to the pool


def withdraw_labels(
    session: Session, category_id: int, which: ColumnElement[bool], *, origin: str, reason: str
) -> dict[int, int]:
    """Take away the category's current labels that meet ``which`` (a predicate on
    :class:`~lsun_crowd.schema.Label`), set-based whatever their number: each gets a
    :data:`WITHDRAWN` event, leaves the labels table and the counts, and its image is open in the
    pool again. Returns how many of each label value went."""
    chosen = (Label.category_id == category_id) & which
    sources = session.execute(
        select(Label.label, Label.source, func.count()).where(chosen).group_by(Label.label, Label.source)
    ).all()
    if not sources:
        return {}
    gone: dict[int, int] = {}
    for label, _, count in sources:
        gone[int(label)] = gone.get(int(label), 0) + int(count)
    session.execute(
        insert(LabelEvent).from_select(
            ["item_id", "category_id", "label", "source", "origin", "round_id", "confidence", "votes", "reason"],
            select(
                Label.item_id,
                Label.category_id,
                literal(WITHDRAWN),
                Label.source,
                literal(origin),
                Label.round_id,
                Label.confidence,
                Label.votes,
                literal(reason),
            ).where(chosen),
        )
    )
    # The images go back to the pool's open rows (those up to its mark are read from there).
    session.execute(
        insert(OpenItem).from_select(
            ["category_id", "item_id"],
            select(literal(category_id), Label.item_id).where(
                chosen,
                Label.item_id <= settled_through(session, category_id),
                ~select(literal(1))
                .where(OpenItem.category_id == category_id, OpenItem.item_id == Label.item_id)
                .exists(),
            ),
        )
    )
    session.execute(delete(Label).where(chosen))
    deltas = {(category_id, int(label), str(source)): -int(count) for label, source, count in sources}
    add_to_counts(session, LabelCount, COUNT_KEYS, deltas)
    return gone


# -- money ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spending:
    """Money booked (rewards, fees, bonuses), by category and kind of job: the one reading of the
    spend rows that ``status``, ``run``, the report, the demo and the API all print."""

    by_kind: dict[tuple[int | None, str], Decimal]  # (category id, job kind) -> amount

    @property
    def total(self) -> Decimal:
        return sum(self.by_kind.values(), Decimal(0))

    def category(self, category_id: int) -> Decimal:
        return sum((amount for (owner, _), amount in self.by_kind.items() if owner == category_id), Decimal(0))


def spending(session: Session, jobs: Sequence[int] | Select[Any] | None = None) -> Spending:
    """What the spend rows (of ``jobs`` only, where given) add up to, by category and job kind. A
    row from before jobs existed counts for its round's category, as kind ``round``."""
    owner = func.coalesce(Job.category_id, Round.category_id)
    query = (
        select(owner, Job.kind, func.sum(Spend.amount))
        .select_from(Spend)
        .outerjoin(Job, Job.id == Spend.job_id)
        .outerjoin(Round, Round.id == Spend.round_id)
        .group_by(owner, Job.kind)
    )
    if jobs is not None:
        query = query.where(Spend.job_id.in_(jobs if isinstance(jobs, Select) else list(jobs)))
    found: dict[tuple[int | None, str], Decimal] = {}
    for category, kind, amount in session.execute(query):
        key = (None if category is None else int(category), str(kind) if kind is not None else "round")
        found[key] = found.get(key, Decimal(0)) + Decimal(amount or 0)
    return Spending(found)


def spent(session: Session) -> Decimal:
    """All the money booked so far."""
    return spending(session).total


def reserved(session: Session) -> Decimal:
    """Money the money check has promised to jobs that have not published yet."""
    total = session.scalar(select(func.coalesce(func.sum(Job.reserved), 0)).where(Job.state == JobState.PUBLISHING))
    return Decimal(total or 0)


# -- what plugins' own commands read -----------------------------------------------------------------


@dataclass(frozen=True)
class WorkerRecord:
    worker_id: str  # the platform's id
    assignments: int
    gold_correct: int
    gold_wrong: int
    blocked: bool


def worker_records(session: Session) -> list[WorkerRecord]:
    """Every worker the project has seen, with their assignments and gold record."""
    rows = session.execute(
        select(
            Worker.platform_worker_id,
            func.count(AssignmentRow.id),
            Worker.gold_correct,
            Worker.gold_wrong,
            Worker.blocked,
        )
        .outerjoin(AssignmentRow, AssignmentRow.worker_id == Worker.id)
        .group_by(Worker.id, Worker.platform_worker_id, Worker.gold_correct, Worker.gold_wrong, Worker.blocked)
        .order_by(Worker.platform_worker_id)
    ).all()
    return [WorkerRecord(str(w), int(n), int(right), int(wrong), bool(blocked)) for w, n, right, wrong, blocked in rows]


@dataclass(frozen=True)
class PlatformWork:
    """What the store accounts for on the platform: every HIT id it recorded (in any state), and
    every job's batch id with the job's state. A HIT of the project in neither is an orphan; a HIT
    of a job still publishing is one a resumed run adopts, not an orphan."""

    hit_ids: frozenset[str]
    jobs: dict[str, str]  # batch id → job state


def platform_work(session: Session) -> PlatformWork:
    hit_ids = frozenset(
        str(hit) for hit in session.scalars(select(Hit.platform_hit_id).where(Hit.platform_hit_id.is_not(None)))
    )
    jobs = {str(batch): str(state) for batch, state in session.execute(select(Job.batch_id, Job.state))}
    return PlatformWork(hit_ids, jobs)
