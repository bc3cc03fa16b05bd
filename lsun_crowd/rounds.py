"""A category's rounds: sampling one, and moving it on as far as it can go without waiting.

A round is sample → crowd jobs (its first batch, then follow-ups) → human labels → train → split.
While a job of the round is out, the round shows the job's state; the crowd's part is moved by
:mod:`lsun_crowd.jobs`, and collecting by the runner's poll over every job at once.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from lsun_crowd import guided as guided_draw
from lsun_crowd import ledger
from lsun_crowd.autolabel import train_and_split
from lsun_crowd.certify import settle_certification
from lsun_crowd.context import Context, JobRef, RoundRef, Stream, model_seed, rng
from lsun_crowd.jobs import advance_job
from lsun_crowd.publish import lay_out_job
from lsun_crowd.review import label_by_humans
from lsun_crowd.schema import ItemRole, Job, Round, RoundItem, RoundKind, RoundState


def latest_round(ctx: Context, category_id: int) -> Round | None:
    with ctx.store.session() as session:
        return session.scalars(
            select(Round).where(Round.category_id == category_id).order_by(Round.number.desc()).limit(1)
        ).first()


def current_job(ctx: Context, ref: RoundRef) -> JobRef:
    """The round's latest job, laid out now if the round has none (a store from before jobs)."""
    with ctx.store.session() as session:
        job = session.scalars(select(Job).where(Job.round_id == ref.id).order_by(Job.sequence.desc()).limit(1)).first()
        if job is None:
            items = list(
                session.scalars(
                    select(RoundItem.item_id).where(RoundItem.round_id == ref.id).order_by(RoundItem.item_id)
                )
            )
            job = lay_out_job(ctx, session, ref, items, follow_up=0, assignments=ctx.config.crowd.votes_per_item)
    return JobRef(ref.category, ref.category_id, job, ref.number)


def advance_round(ctx: Context, ref: RoundRef) -> bool:
    """Do the round's next step if it is due now; ``False`` when it waits (on the crowd, or for
    money). Each step commits the state it reached."""
    state = RoundState(ref.round.state)
    if state == RoundState.REVIEWED:
        with ctx.stages.timed("aggregate", ref.number):
            label_by_humans(ctx, ref)
        return True
    if state == RoundState.LABELED and ref.round.kind == RoundKind.CERTIFY:
        with ctx.stages.timed("split", ref.number):
            settle_certification(ctx, ref)
        return True
    if state == RoundState.LABELED:
        train_and_split(ctx, ref)  # times its own stages: train, score, split, store writes
        return True
    if state in (RoundState.DONE, RoundState.STOPPED):
        return False
    return advance_job(ctx, current_job(ctx, ref))


def sample_round(ctx: Context, category: str, category_id: int, number: int) -> Round:
    """Draw round ``number``'s images from the pool (from the seed alone), with its first job laid
    out, in one transaction. Memory grows with the sample, never with the pool."""
    with ctx.stages.timed("sample", number):
        return _sample_round(ctx, category, category_id, number)


def _sample_round(ctx: Context, category: str, category_id: int, number: int) -> Round:
    cascade = ctx.config.cascade
    with ctx.store.session() as session:
        pool = ledger.pool_size(session, category_id)
        human_only = pool <= cascade.finish_with_humans_below
        # Never more than half the pool: the other half is what the model is there to label.
        size = min(cascade.sample_per_round, pool // 2)
        chosen, guided_items, guided = _draw(ctx, session, category_id, number, pool, size, human_only)
        round_ = Round(
            category_id=category_id,
            number=number,
            state=RoundState.SAMPLED,
            human_only=bool(human_only),
            pool_size=pool,
        )
        session.add(round_)
        session.flush()
        for rows in ledger.chunks(chosen.tolist()):
            session.add_all(
                RoundItem(
                    round_id=round_.id,
                    item_id=int(item),
                    role=ItemRole.CANDIDATE if item in guided_items else ItemRole.TRAIN,
                )
                for item in rows
            )
        session.flush()
        ref = RoundRef(category, category_id, round_)
        lay_out_job(ctx, session, ref, chosen.tolist(), follow_up=0, assignments=ctx.config.crowd.votes_per_item)
    kind = "the rest of the pool, all to humans" if human_only else f"{len(chosen)} of {pool}"
    if guided is not None and guided_items:
        which = "positives" if guided.rarer == 1 else "negatives"
        kind += f" ({len(guided_items)} of them the pool's likeliest {which}: {guided.expected:.1f} expected at random)"
    ctx.progress.message(f"{category}: round {number}: sampled {kind}")
    return round_


def _draw(
    ctx: Context, session: Session, category_id: int, number: int, pool: int, size: int, human_only: bool
) -> tuple[NDArray[np.int64], set[int], guided_draw.Guided | None]:
    """Round ``number``'s images (item ids in id order): all of the pool where it goes to people
    alone, else ``size`` drawn uniformly, or, in a guided round (:mod:`lsun_crowd.guided`), the
    candidates among them (also returned) and the rest drawn uniformly from the pool without them."""
    generator = rng(ctx.config.project.seed, category_id, number, Stream.ROUND_SAMPLE)
    if human_only:
        return ledger.pool_at(session, category_id, np.arange(pool)), set(), None
    share = ctx.config.cascade.guided_share
    guided = guided_draw.rarer_class(session, category_id, number, size, ctx.config.cascade.min_class_labels)
    if guided is None or share <= 0:
        return ledger.pool_at(session, category_id, generator.choice(pool, size=size, replace=False)), set(), None
    seed = model_seed(ctx.config.project.seed, category_id, number)
    wanted = int(size * share)
    candidates = guided_draw.candidates(ctx, session, category_id, seed, wanted, guided.rarer)
    drawn = ledger.pool_at(
        session, category_id, guided_draw.uniform_besides(generator, pool, candidates, size - len(candidates))
    )
    guided_items = ledger.pool_at(session, category_id, candidates)
    return np.sort(np.concatenate([drawn, guided_items])), set(guided_items.tolist()), guided
