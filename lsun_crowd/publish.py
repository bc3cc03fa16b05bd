"""Publishing a job: its HITs laid out from the seed, the money checked, the batch posted.

The layout is stored before anything is posted, and the platform publishes idempotently by batch
id, so a crash anywhere here is resumed by simply publishing again. A round's first job is its
first batch; each follow-up job (adaptive redundancy) asks more votes for images still uncertain.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from decimal import Decimal
from enum import StrEnum

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from lsun_crowd import crashpoints, ledger
from lsun_crowd.context import Context, JobRef, RoundRef, Stream, rng, set_job_state
from lsun_crowd.crowd import NO, YES, HitBatch, HitItem, HitSpec, HitState, QualificationTest
from lsun_crowd.ids import round_batch
from lsun_crowd.schema import (
    AssignmentRow,
    Gold,
    GroupJob,
    Hit,
    HitItemRow,
    Item,
    Job,
    JobKind,
    JobState,
    Spend,
    SpendKind,
    Vote,
    Worker,
)
from lsun_crowd.store import Store, insert_ignoring_duplicates


def spent_so_far(store: Store) -> Decimal:
    with store.session() as session:
        return ledger.spent(session)


def batch_for(ctx: Context, ref: JobRef) -> HitBatch:
    """The job's batch of HITs, as laid out in the store."""
    crowd = ctx.config.crowd
    with ctx.store.session() as session:
        hits = session.scalars(select(Hit).where(Hit.job_id == ref.id).order_by(Hit.hit_key)).all()
        rows = session.execute(
            select(HitItemRow.hit_id, HitItemRow.item_id, Item.uri)
            .join(Item, Item.id == HitItemRow.item_id)
            .join(Hit, Hit.id == HitItemRow.hit_id)
            .where(Hit.job_id == ref.id)
            .order_by(HitItemRow.hit_id, HitItemRow.position)
        ).all()
        test = qualification_test(ctx, session, ref)
        group = session.get(GroupJob, ref.id)  # a multi-label job asks about a group of categories
        kept_off = workers_who_saw(session, ref.id) if ref.job.kind in FRESH_WORKER_KINDS else {}
    items_by_hit: dict[int, list[HitItem]] = {}
    for hit_id, item_id, uri in rows:
        items_by_hit.setdefault(hit_id, []).append(HitItem(str(item_id), uri))
    specs = tuple(
        HitSpec(hit.hit_key, tuple(items_by_hit[hit.id]), frozenset(kept_off.get(hit.id, ()))) for hit in hits
    )
    batch = HitBatch(
        batch_id=ref.batch_id,
        category=ref.category,
        question=question(ref.category),
        hits=specs,
        assignments_per_hit=ref.job.assignments_per_hit,
        reward_per_assignment=crowd.reward_per_assignment,
        lifetime_seconds=crowd.hit_lifetime_seconds,
        qualification=test,
    )
    if group is None:
        return batch
    categories = tuple(json.loads(group.categories))
    # One category's yes/no qualification test does not fit a question about the whole group.
    return replace(
        batch, category=group.group_name, question=MULTI_LABEL_QUESTION, categories=categories, qualification=None
    )


MULTI_LABEL_QUESTION = "Which of these does the image show?"


# Jobs that check labels already given: their HITs go only to workers who have not answered about
# their images before (in any category, in any other job), so that every new answer is independent
# of the label it checks.
FRESH_WORKER_KINDS = frozenset({JobKind.AUDIT, JobKind.REPAIR})


def workers_who_saw(session: Session, job_id: int) -> dict[int, set[str]]:
    """For each HIT of the job, the platform ids of the workers who voted on any of its images
    (gold left aside: its answer is known) in any other job."""
    earlier = aliased(Hit)
    rows = session.execute(
        select(HitItemRow.hit_id, Worker.platform_worker_id)
        .join(Hit, Hit.id == HitItemRow.hit_id)
        .join(Vote, Vote.item_id == HitItemRow.item_id)
        .join(AssignmentRow, AssignmentRow.id == Vote.assignment_id)
        .join(earlier, earlier.id == AssignmentRow.hit_id)
        .join(Worker, Worker.id == Vote.worker_id)
        .where(Hit.job_id == job_id, HitItemRow.is_gold.is_(False), earlier.job_id.is_distinct_from(job_id))
        .distinct()
    ).all()
    found: dict[int, set[str]] = {}
    for hit_id, worker in rows:
        found.setdefault(int(hit_id), set()).add(str(worker))
    return found


def question(category: str) -> str:
    return f"Does the image show: {category}?"


def qualification_test(ctx: Context, session: Session, ref: RoundRef | JobRef) -> QualificationTest | None:
    """The category's qualification test: ``qualification_items`` gold images drawn from the seed,
    positives and negatives alternating, which are then never hidden in a HIT (a worker who took
    the test would know them). ``None`` when the project asks for no test."""
    quality = ctx.config.quality
    if quality.qualification_items == 0:
        return None
    category, category_id = ref.category, ref.category_id
    gold = session.execute(
        select(Gold.item_id, Gold.answer, Item.uri)
        .join(Item, Item.id == Gold.item_id)
        .where(Gold.category_id == category_id)
        .order_by(Gold.item_id)
    ).all()
    needed = quality.qualification_items + ctx.config.crowd.gold_per_hit
    if len(gold) < needed:
        raise ValueError(
            f"category {category!r} has {len(gold)} gold item(s); the qualification test takes "
            f"{quality.qualification_items} ([quality] qualification_items) and each HIT hides "
            f"{ctx.config.crowd.gold_per_hit} ([crowd] gold_per_hit), so it needs at least {needed}"
        )
    generator = rng(ctx.config.project.seed, category_id, 0, Stream.QUALIFICATION)
    by_answer = [[row for row in gold if row.answer == answer] for answer in (1, 0)]
    for rows in by_answer:
        generator.shuffle(rows)
    # Alternate positives and negatives while both last, so the test checks both answers.
    mixed = [row for pair in zip(*by_answer, strict=False) for row in pair]
    shorter = min(len(rows) for rows in by_answer)
    mixed += by_answer[0][shorter:] + by_answer[1][shorter:]
    chosen = sorted(mixed[: quality.qualification_items], key=lambda row: row.item_id)
    return QualificationTest(
        test_id=f"{ctx.project_key()}:{category}:qualification",
        question=question(category),
        items=tuple(HitItem(str(row.item_id), row.uri) for row in chosen),
        answers={str(row.item_id): YES if row.answer == 1 else NO for row in chosen},
        pass_mark=quality.qualification_pass,
    )


def lay_out_job(
    ctx: Context, session: Session, ref: RoundRef, items: list[int], follow_up: int, assignments: int
) -> Job:
    """Store a job of the round: one batch of HITs for ``items``, each HIT with its hidden gold, in
    an order drawn from the seed."""
    items = list(items)
    generator = rng(ctx.config.project.seed, ref.category_id, ref.number, Stream.HIT_ORDER, follow_up)
    generator.shuffle(items)
    job = Job(
        category_id=ref.category_id,
        round_id=ref.id,
        kind=JobKind.FOLLOW_UP if follow_up else JobKind.ROUND,
        sequence=follow_up,
        batch_id=round_batch(ctx.project_key(), ref.category, ref.number, follow_up),
        state=JobState.PENDING,
        assignments_per_hit=assignments,
    )
    session.add(job)
    session.flush()
    lay_out_hits(ctx, session, JobRef(ref.category, ref.category_id, job, ref.number), items, generator)
    return job


def add_fresh_job(
    ctx: Context,
    session: Session,
    category: str,
    category_id: int,
    job: Job,
    items: list[int],
    per_hit: int,
    generator: np.random.Generator,
) -> Job:
    """Store ``job`` (an audit's, a repair's: no round, pending) with its HITs for fresh workers."""
    session.add(job)
    session.flush()
    lay_out_fresh_job(ctx, session, JobRef(category, category_id, job, None), list(items), per_hit, generator)
    return job


def lay_out_fresh_job(
    ctx: Context, session: Session, ref: JobRef, items: list[int], per_hit: int, generator: np.random.Generator
) -> None:
    """The HITs of a job for fresh workers (an audit, a repair): at most ``per_hit`` images each,
    images whose earlier voters overlap side by side, so that each HIT keeps as few workers away
    as it can (:func:`workers_who_saw`)."""
    first_vote = dict(
        session.execute(
            select(Vote.item_id, func.min(Vote.assignment_id)).where(Vote.item_id.in_(items)).group_by(Vote.item_id)
        ).all()
    )
    ordered = sorted(items, key=lambda item: (first_vote.get(item, 0), item))
    lay_out_hits(ctx, session, ref, ordered, generator, per_hit)


def lay_out_hits(
    ctx: Context,
    session: Session,
    ref: JobRef,
    items: list[int],
    generator: np.random.Generator,
    most_per_hit: int | None = None,
) -> None:
    """Store ``ref``'s HITs: ``items`` in order, as many a HIT as room leaves beside its hidden gold
    (the category's gold outside the qualification test, drawn from ``generator``), in an order
    drawn from it too."""
    crowd = ctx.config.crowd
    test = qualification_test(ctx, session, ref)
    in_test = {int(item.item_key) for item in test.items} if test else set()
    hideable = select(Gold.item_id).where(Gold.category_id == ref.category_id, Gold.item_id.notin_(in_test))
    gold = list(session.scalars(hideable.order_by(Gold.item_id)))
    gold_count = min(crowd.gold_per_hit, len(gold))
    per_hit = crowd.items_per_hit - gold_count
    if most_per_hit is not None:
        per_hit = max(1, min(most_per_hit, per_hit))
    for number, start in enumerate(range(0, len(items), per_hit)):
        members = [(item, False) for item in items[start : start + per_hit]]
        if gold_count:
            members += [(int(g), True) for g in generator.choice(gold, size=gold_count, replace=False)]
        order = generator.permutation(len(members))
        hit = Hit(
            round_id=ref.job.round_id,
            job_id=ref.id,
            batch_id=ref.job.batch_id,
            hit_key=f"h{number:05d}",
            assignments_requested=ref.job.assignments_per_hit,
        )
        session.add(hit)
        session.flush()
        session.add_all(
            HitItemRow(hit_id=hit.id, position=position, item_id=members[index][0], is_gold=members[index][1])
            for position, index in enumerate(order)
        )


class Shortfall(StrEnum):
    """Why a job could not be paid for: the first word of the notes of the job it stopped (and of
    its round), which outlive the run that wrote them."""

    BUDGET = "budget"  # the project's budget
    BALANCE = "balance"  # the crowd platform's account


def shortfall_of(notes: str | None) -> Shortfall:
    """The shortfall a stopped job's or round's notes name (:data:`Shortfall.BUDGET` where they
    name none)."""
    head = (notes or "").split(":", 1)[0]
    return Shortfall(head) if head in tuple(Shortfall) else Shortfall.BUDGET


def check_money(ctx: Context, ref: JobRef) -> JobState:
    """Stop the job (state ``stopped``) if the budget or the platform balance cannot pay for it,
    counting what other jobs have been promised and not yet spent; otherwise reserve its cost."""
    batch = batch_for(ctx, ref)
    cost = ctx.crowd.estimate_cost(batch)
    with ctx.store.session() as session:
        committed = ledger.spent(session) + ledger.reserved(session)
    budget = ctx.config.cascade.budget
    what = f"round {ref.round_number}" if ref.round_number is not None else ref.batch_id
    reason = None
    if committed + cost.total > budget:
        left = (budget - committed).normalize()
        reason = f"{Shortfall.BUDGET}: {what} would cost {cost.total}, {left} of {budget} left"
    else:
        balance = ctx.crowd.balance()
        if balance is not None and balance < cost.total:
            reason = f"{Shortfall.BALANCE}: {what} would cost {cost.total}, the account holds {balance}"
    with ctx.store.session() as session:
        if reason is not None:  # said once, in the run's closing line for the category
            return set_job_state(session, ref, JobState.STOPPED, notes=reason, round_notes=reason)
        # Past this commit the checks are done: a crash during publish resumes the publish itself.
        return set_job_state(session, ref, JobState.PUBLISHING, reserved=cost.total)


def publish(ctx: Context, ref: JobRef) -> JobState:
    batch = batch_for(ctx, ref)
    cost = ctx.crowd.estimate_cost(batch)
    published = ctx.crowd.publish(batch)
    crashpoints.reached(f"created:{ref.job.kind}")  # the platform has the HITs; the store not yet
    platform_ids = {hit.hit_key: hit.hit_id for hit in published}
    with ctx.store.session() as session:
        for hit in session.scalars(select(Hit).where(Hit.job_id == ref.id)):
            hit.platform_hit_id = platform_ids[hit.hit_key]
            hit.state = HitState.OPEN
        common = {"round_id": ref.round_id, "job_id": ref.id, "reference": batch.batch_id}
        insert_ignoring_duplicates(
            session,
            Spend,
            [
                common | {"kind": SpendKind.REWARD, "amount": cost.rewards},
                common | {"kind": SpendKind.FEE, "amount": cost.fees},
            ],
        )
        deadline = time.time() + ctx.config.crowd.collect_timeout_seconds
        state = set_job_state(session, ref, JobState.PUBLISHED, reserved=None, collect_deadline=deadline)
    ctx.progress.message(f"{ref.describe()}: published {len(published)} HITs ({cost.total} USD)")
    return state
