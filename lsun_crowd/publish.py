"""Publishing a round: its HITs laid out from the seed, the money checked, the batch posted.

The layout is stored before anything is posted, and the platform publishes idempotently by batch
id, so a crash anywhere here is resumed by simply publishing again. A round publishes its first
batch, then (adaptive redundancy) one follow-up batch per pass for the images still uncertain.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lsun_crowd.context import PUBLISHED, PUBLISHING, STOPPED, Context, RoundRef, rng, set_state
from lsun_crowd.crowd import NO, YES, HitBatch, HitItem, HitSpec, HitState, QualificationTest
from lsun_crowd.schema import Gold, Hit, Item, Round, RoundItem, Spend
from lsun_crowd.schema import HitItem as HitItemRow
from lsun_crowd.store import Store, insert_ignoring_duplicates


def batch_id(ctx: Context, ref: RoundRef, follow_up: int = 0) -> str:
    """The round's first batch, or its ``follow_up``-th batch of extra votes."""
    base = f"{ctx.config.project.name}:{ref.category}:r{ref.number}"
    return f"{base}:f{follow_up}" if follow_up else base


def spent_so_far(store: Store) -> Decimal:
    with store.session() as session:
        return Decimal(session.scalar(select(func.coalesce(func.sum(Spend.amount), 0))) or 0)


def batch_for(ctx: Context, ref: RoundRef) -> HitBatch:
    """The round's current batch of HITs, laid out the same way every time it is asked for."""
    crowd = ctx.config.crowd
    with ctx.store.session() as session:
        follow_up = session.scalar(select(Round.follow_up).where(Round.id == ref.id)) or 0
        current = batch_id(ctx, ref, follow_up)
        if follow_up == 0 and session.scalar(select(func.count(Hit.id)).where(Hit.batch_id == current)) == 0:
            items = list(
                session.scalars(
                    select(RoundItem.item_id).where(RoundItem.round_id == ref.id).order_by(RoundItem.item_id)
                )
            )
            lay_out_hits(ctx, session, ref, items, follow_up=0, assignments=crowd.votes_per_item)
        hits = session.scalars(select(Hit).where(Hit.batch_id == current).order_by(Hit.hit_key)).all()
        rows = session.execute(
            select(HitItemRow.hit_id, HitItemRow.item_id, Item.uri)
            .join(Item, Item.id == HitItemRow.item_id)
            .where(HitItemRow.hit_id.in_([hit.id for hit in hits]))
            .order_by(HitItemRow.hit_id, HitItemRow.position)
        ).all()
        test = qualification_test(ctx, session, ref)
    items_by_hit: dict[int, list[HitItem]] = {}
    for hit_id, item_id, uri in rows:
        items_by_hit.setdefault(hit_id, []).append(HitItem(str(item_id), uri))
    specs = tuple(HitSpec(hit.hit_key, tuple(items_by_hit[hit.id])) for hit in hits)
    return HitBatch(
        batch_id=current,
        category=ref.category,
        question=question(ref.category),
        hits=specs,
        assignments_per_hit=hits[0].assignments_requested if hits else crowd.votes_per_item,
        reward_per_assignment=crowd.reward_per_assignment,
        lifetime_seconds=crowd.hit_lifetime_seconds,
        qualification=test,
    )


def question(category: str) -> str:
    return f"Does the image show: {category}?"


def qualification_test(ctx: Context, session: Session, ref: RoundRef) -> QualificationTest | None:
    """The category's qualification test: ``qualification_items`` gold images drawn from the seed,
    positives and negatives alternating, which are then never hidden in a HIT (a worker who took
    the test would know them). ``None`` when the project asks for no test."""
    quality = ctx.config.quality
    if quality.qualification_items == 0:
        return None
    gold = session.execute(
        select(Gold.item_id, Gold.answer, Item.uri)
        .join(Item, Item.id == Gold.item_id)
        .where(Gold.category_id == ref.category_id)
        .order_by(Gold.item_id)
    ).all()
    needed = quality.qualification_items + ctx.config.crowd.gold_per_hit
    if len(gold) < needed:
        raise ValueError(
            f"category {ref.category!r} has {len(gold)} gold item(s); the qualification test takes "
            f"{quality.qualification_items} ([quality] qualification_items) and each HIT hides "
            f"{ctx.config.crowd.gold_per_hit} ([crowd] gold_per_hit), so it needs at least {needed}"
        )
    generator = rng(ctx.config.project.seed, ref.category_id, 0, 3)
    by_answer = [[row for row in gold if row.answer == answer] for answer in (1, 0)]
    for rows in by_answer:
        generator.shuffle(rows)
    # Alternate positives and negatives while both last, so the test checks both answers.
    mixed = [row for pair in zip(*by_answer, strict=False) for row in pair]
    shorter = min(len(rows) for rows in by_answer)
    mixed += by_answer[0][shorter:] + by_answer[1][shorter:]
    chosen = sorted(mixed[: quality.qualification_items], key=lambda row: row.item_id)
    return QualificationTest(
        test_id=f"{ctx.config.project.name}:{ref.category}:qualification",
        question=question(ref.category),
        items=tuple(HitItem(str(row.item_id), row.uri) for row in chosen),
        answers={str(row.item_id): YES if row.answer == 1 else NO for row in chosen},
        pass_mark=quality.qualification_pass,
    )


def lay_out_hits(
    ctx: Context, session: Session, ref: RoundRef, items: list[int], follow_up: int, assignments: int
) -> None:
    """Store one batch of HITs for ``items``, each HIT with its hidden gold, in an order drawn from
    the seed."""
    crowd = ctx.config.crowd
    items = list(items)
    test = qualification_test(ctx, session, ref)
    in_test = {int(item.item_key) for item in test.items} if test else set()
    hideable = select(Gold.item_id).where(Gold.category_id == ref.category_id, Gold.item_id.notin_(in_test))
    gold = list(session.scalars(hideable.order_by(Gold.item_id)))
    generator = rng(ctx.config.project.seed, ref.category_id, ref.number, 2, follow_up)
    generator.shuffle(items)
    gold_count = min(crowd.gold_per_hit, len(gold))
    per_hit = crowd.items_per_hit - gold_count
    batch = batch_id(ctx, ref, follow_up)
    for number, start in enumerate(range(0, len(items), per_hit)):
        members = [(item, False) for item in items[start : start + per_hit]]
        if gold_count:
            members += [(int(g), True) for g in generator.choice(gold, size=gold_count, replace=False)]
        order = generator.permutation(len(members))
        hit = Hit(round_id=ref.id, batch_id=batch, hit_key=f"h{number:05d}", assignments_requested=assignments)
        session.add(hit)
        session.flush()
        session.add_all(
            HitItemRow(hit_id=hit.id, position=position, item_id=members[index][0], is_gold=members[index][1])
            for position, index in enumerate(order)
        )


def check_money(ctx: Context, ref: RoundRef) -> str:
    """Stop the round (state ``stopped``) if the budget or the platform balance cannot pay for it."""
    batch = batch_for(ctx, ref)
    cost = ctx.crowd.estimate_cost(batch)
    spent = spent_so_far(ctx.store)
    budget = ctx.config.cascade.budget
    reason = None
    if spent + cost.total > budget:
        reason = f"budget: round {ref.number} would cost {cost.total}, {budget - spent} of {budget} left"
    else:
        balance = ctx.crowd.balance()
        if balance is not None and balance < cost.total:
            reason = f"balance: round {ref.number} would cost {cost.total}, the account holds {balance}"
    with ctx.store.session() as session:
        if reason is not None:
            ctx.progress.message(f"{ref.category}: stopped, {reason}")
            return set_state(session, ref, STOPPED, notes=reason)
        # Past this commit the checks are done: a crash during publish resumes the publish itself.
        return set_state(session, ref, PUBLISHING)


def publish(ctx: Context, ref: RoundRef) -> str:
    batch = batch_for(ctx, ref)
    cost = ctx.crowd.estimate_cost(batch)
    published = ctx.crowd.publish(batch)
    platform_ids = {hit.hit_key: hit.hit_id for hit in published}
    with ctx.store.session() as session:
        for hit in session.scalars(select(Hit).where(Hit.batch_id == batch.batch_id)):
            hit.platform_hit_id = platform_ids[hit.hit_key]
            hit.state = HitState.OPEN
        insert_ignoring_duplicates(
            session,
            Spend,
            [
                {"round_id": ref.id, "reference": batch.batch_id, "kind": "reward", "amount": cost.rewards},
                {"round_id": ref.id, "reference": batch.batch_id, "kind": "fee", "amount": cost.fees},
            ],
        )
        state = set_state(session, ref, PUBLISHED)
    extra = f", follow-up {batch.batch_id.rsplit(':f', 1)[1]}" if batch.batch_id != batch_id(ctx, ref) else ""
    ctx.progress.message(
        f"{ref.category}: round {ref.number}{extra}: published {len(published)} HITs ({cost.total} USD)"
    )
    return state
