"""Collecting a round: poll the platform until every HIT is complete or expired, storing each
new assignment and its votes as it arrives. Votes are unique per assignment and image, so an
assignment listed twice, or again after a crash, is stored once."""

from __future__ import annotations

import logging
import time

from sqlalchemy import func, select, update

from lsun_crowd.context import COLLECTED, Context, RoundRef, set_state
from lsun_crowd.crowd import NO, YES, HitState
from lsun_crowd.schema import AssignmentRow, Hit, Vote, Worker
from lsun_crowd.schema import HitItem as HitItemRow
from lsun_crowd.store import insert_ignoring_duplicates

log = logging.getLogger(__name__)
ANSWER_VALUES = {YES: 1, NO: 0}


def collect(ctx: Context, ref: RoundRef) -> str:
    crowd = ctx.config.crowd
    deadline = time.monotonic() + crowd.collect_timeout_seconds
    with ctx.store.session() as session:
        round_hits = session.scalars(select(Hit).where(Hit.round_id == ref.id)).all()
        hits = {hit.platform_hit_id: hit.id for hit in round_hits}
        total = sum(hit.assignments_requested for hit in round_hits)
        have = session.scalar(select(func.count(AssignmentRow.id)).where(AssignmentRow.hit_id.in_(hits.values())))
    task = f"{ref.category} r{ref.number}: assignments"
    ctx.progress.start(task, total)
    ctx.progress.advance(task, int(have or 0))
    while True:
        with ctx.store.session() as session:
            open_ids = [
                pid
                for pid in session.scalars(
                    select(Hit.platform_hit_id).where(Hit.round_id == ref.id, Hit.state == HitState.OPEN)
                ).all()
                if pid
            ]
        if not open_ids:
            break
        # One reading of the clock per poll: a HIT is only ever given up on after the platform
        # was told to expire it, never because the deadline passed halfway through a poll.
        timed_out = time.monotonic() > deadline
        if timed_out:
            ctx.crowd.expire(open_ids)
        for status in ctx.crowd.hit_status(open_ids):
            added = _store_assignments(ctx, ref.category_id, hits[status.hit_id], status.hit_id)
            ctx.progress.advance(task, added)
            if status.state != HitState.OPEN or timed_out:
                final = HitState.EXPIRED if status.state == HitState.OPEN else status.state
                with ctx.store.session() as session:
                    session.execute(update(Hit).where(Hit.id == hits[status.hit_id]).values(state=final))
        ctx.sleep(crowd.poll_seconds)
    ctx.progress.finish(task)
    with ctx.store.session() as session:
        return set_state(session, ref, COLLECTED)


def _store_assignments(ctx: Context, cat_id: int, hit_row_id: int, platform_hit_id: str) -> int:
    """Store a HIT's new assignments and their votes. Returns how many assignments were new."""
    assignments = ctx.crowd.list_assignments(platform_hit_id)
    with ctx.store.session() as session:
        known = set(
            session.scalars(select(AssignmentRow.platform_assignment_id).where(AssignmentRow.hit_id == hit_row_id))
        )
        fresh = [a for a in assignments if a.assignment_id not in known]
        if not fresh:
            return 0
        layout = dict(
            session.execute(select(HitItemRow.item_id, HitItemRow.is_gold).where(HitItemRow.hit_id == hit_row_id)).all()
        )
        insert_ignoring_duplicates(session, Worker, [{"platform_worker_id": a.worker_id} for a in fresh])
        worker_ids = dict(
            session.execute(
                select(Worker.platform_worker_id, Worker.id).where(
                    Worker.platform_worker_id.in_({a.worker_id for a in fresh})
                )
            ).all()
        )
        insert_ignoring_duplicates(
            session,
            AssignmentRow,
            [
                {
                    "platform_assignment_id": a.assignment_id,
                    "hit_id": hit_row_id,
                    "worker_id": worker_ids[a.worker_id],
                    "status": a.status.value,
                    "accepted_at": a.accepted_at,
                    "submitted_at": a.submitted_at,
                }
                for a in fresh
            ],
        )
        row_ids = dict(
            session.execute(
                select(AssignmentRow.platform_assignment_id, AssignmentRow.id).where(
                    AssignmentRow.platform_assignment_id.in_([a.assignment_id for a in fresh])
                )
            ).all()
        )
        votes = []
        for assignment in fresh:
            for key, answer in assignment.answers.items():
                item_id = int(key) if key.isdigit() else None
                if item_id not in layout or answer not in ANSWER_VALUES:
                    log.warning(
                        "assignment %s: ignored answer %r for %r, not an image of this HIT or not yes/no",
                        assignment.assignment_id,
                        answer,
                        key,
                    )
                    continue
                votes.append(
                    {
                        "assignment_id": row_ids[assignment.assignment_id],
                        "item_id": item_id,
                        "category_id": cat_id,
                        "worker_id": worker_ids[assignment.worker_id],
                        "answer": ANSWER_VALUES[answer],
                        "is_gold": layout[item_id],
                    }
                )
        insert_ignoring_duplicates(session, Vote, votes)
    return len(fresh)
