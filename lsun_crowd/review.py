"""Reviewing a round: score gold answers, block workers confidently below the bar, approve or
reject each assignment through the crowd, then turn the votes into human labels."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from lsun_crowd.aggregate import Votes
from lsun_crowd.context import LABELED, REVIEWED, Context, RoundRef, set_state
from lsun_crowd.dawid_skene import dawid_skene
from lsun_crowd.quality import assess
from lsun_crowd.schema import AssignmentRow, Gold, Hit, Label, RoundItem, Vote, Worker
from lsun_crowd.store import insert_ignoring_duplicates

REJECTION_FEEDBACK = "Your answers on our check images were too often wrong, so this work was not accepted."


def review(ctx: Context, ref: RoundRef) -> str:
    policy = ctx.config.quality
    round_assignments = select(AssignmentRow.id).join(Hit, Hit.id == AssignmentRow.hit_id).where(Hit.round_id == ref.id)
    with ctx.store.session() as session:
        # Score gold answers exactly once per assignment, in the same transaction as the flag.
        unscored = (
            select(Vote.worker_id, Vote.answer, Gold.answer)
            .join(Gold, (Gold.item_id == Vote.item_id) & (Gold.category_id == Vote.category_id))
            .join(AssignmentRow, AssignmentRow.id == Vote.assignment_id)
            .where(Vote.is_gold, AssignmentRow.gold_scored.is_(False), AssignmentRow.id.in_(round_assignments))
        )
        tallies: dict[int, list[int]] = {}
        for worker_id, answer, truth in session.execute(unscored):
            tallies.setdefault(worker_id, [0, 0])[0 if answer == truth else 1] += 1
        for worker_id, (correct, wrong) in tallies.items():
            session.execute(
                update(Worker)
                .where(Worker.id == worker_id)
                .values(gold_correct=Worker.gold_correct + correct, gold_wrong=Worker.gold_wrong + wrong)
            )
        session.execute(update(AssignmentRow).where(AssignmentRow.id.in_(round_assignments)).values(gold_scored=True))
    with ctx.store.session() as session:
        workers = session.scalars(select(Worker).where(Worker.blocked.is_(False))).all()
        judged = [(worker, assess(worker.gold_correct, worker.gold_wrong, policy)) for worker in workers]
        to_block = [(worker, quality) for worker, quality in judged if quality.blocked]
    for worker, quality in to_block:
        ctx.crowd.block_worker(
            worker.platform_worker_id,
            (
                f"gold accuracy {worker.gold_correct}/{worker.gold_correct + worker.gold_wrong}; "
                f"P(accuracy < {policy.accuracy_bar}) = {quality.below_bar:.3f}"
            ),
        )
        with ctx.store.session() as session:
            session.execute(update(Worker).where(Worker.id == worker.id).values(blocked=True))
    if to_block:
        ctx.progress.message(f"{ref.category}: blocked {len(to_block)} worker(s) on gold answers")
    with ctx.store.session() as session:
        pending = session.execute(
            select(AssignmentRow.id, AssignmentRow.platform_assignment_id, Worker.blocked)
            .join(Worker, Worker.id == AssignmentRow.worker_id)
            .where(AssignmentRow.id.in_(round_assignments), AssignmentRow.status == "submitted")
            .order_by(AssignmentRow.id)
        ).all()
    for row_id, platform_id, blocked in pending:
        if blocked:
            ctx.crowd.reject(platform_id, REJECTION_FEEDBACK)
        else:
            ctx.crowd.approve(platform_id, "Thank you!")
        with ctx.store.session() as session:
            session.execute(
                update(AssignmentRow)
                .where(AssignmentRow.id == row_id)
                .values(status="rejected" if blocked else "approved")
            )
    with ctx.store.session() as session:
        return set_state(session, ref, REVIEWED)


def label_by_humans(ctx: Context, ref: RoundRef) -> str:
    """Aggregate every vote of the ref.category (earlier rounds and gold too, which measure the
    workers) and label this round's images whose posterior is confident enough."""
    minimum = ctx.config.crowd.min_votes_per_item
    quality = ctx.config.quality
    with ctx.store.session() as session:
        rows = session.execute(
            select(Vote.item_id, Worker.platform_worker_id, Vote.answer)
            .join(Worker, Worker.id == Vote.worker_id)
            .where(Vote.category_id == ref.category_id, Worker.blocked.is_(False))
            # An order that does not depend on when each vote arrived, so that a resumed run
            # sums in the same order as an uninterrupted one, to the last bit.
            .order_by(Vote.item_id, Worker.platform_worker_id, Vote.answer)
        ).all()
        gold = dict(session.execute(select(Gold.item_id, Gold.answer).where(Gold.category_id == ref.category_id)).all())
        in_round = set(session.scalars(select(RoundItem.item_id).where(RoundItem.round_id == ref.id)))
        labels: list[dict[str, Any]] = []
        if rows:
            votes = Votes.from_triples(rows, classes=(0, 1))
            known = {index: gold[item] for index, item in enumerate(votes.items) if item in gold}
            posterior = dawid_skene(votes, known, quality.prior_correct, quality.prior_wrong)
            winners, confidence = posterior.labels(), posterior.confidence()
            for index, item in enumerate(posterior.items):
                count = int(posterior.vote_counts[index])
                if item not in in_round or count < minimum or confidence[index] < quality.min_label_confidence:
                    continue  # not this round's, too few votes, or too uncertain: back to the pool
                labels.append(
                    {
                        "item_id": item,
                        "category_id": ref.category_id,
                        "label": int(winners[index]),
                        "source": "human",
                        "round_id": ref.id,
                        "confidence": float(confidence[index]),
                        "votes": count,
                    }
                )
        insert_ignoring_duplicates(session, Label, labels)
        state = set_state(session, ref, LABELED)
    ctx.progress.message(
        f"{ref.category}: round {ref.number}: {len(labels)} images labeled by humans "
        f"({sum(label['label'] for label in labels)} positive)"
    )
    return state
