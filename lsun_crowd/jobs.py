"""Jobs: units of crowd work, each moved on by :func:`advance_job` without ever waiting.

A job is laid out (its HITs stored), checked for money, published, collected (by the runner's
poll, which covers every job at once) and reviewed. Each operation is idempotent and commits the
state it reached, so a job resumes after a crash wherever it stopped.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from lsun_crowd.collect import poll
from lsun_crowd.context import Context, JobRef, job_refs
from lsun_crowd.publish import check_money, publish
from lsun_crowd.review import review
from lsun_crowd.schema import Job, JobState

STEPS: dict[JobState, Callable[[Context, JobRef], JobState]] = {
    JobState.PENDING: check_money,
    JobState.PUBLISHING: publish,
    JobState.COLLECTED: review,
}


def advance_job(ctx: Context, ref: JobRef, collect: bool = False) -> bool:
    """Do what is due now: check the money and publish what is not published, store what has
    arrived (with ``collect``; the runner instead polls every job's HITs at once), review complete
    work. ``False`` when nothing moved: the job waits on the crowd or for money, or is done."""
    state = ref.state
    moved = False
    if state == JobState.PUBLISHED and collect:
        moved = poll(ctx, [ref.category_id], job_id=ref.id).moved
        with ctx.store.session() as session:
            state = JobState(session.scalars(select(Job.state).where(Job.id == ref.id)).one())
    while state in STEPS:
        with ctx.stages.timed("review" if state == JobState.COLLECTED else "publish", ref.round_number):
            state = STEPS[state](ctx, ref)
        moved = True
    return moved


def recheck_stopped(ctx: Context, category_ids: list[int]) -> None:
    """Jobs stopped for money go on if a raised budget or a topped-up balance now allows them."""
    with ctx.store.session() as session:
        stopped = job_refs(session, Job.state == JobState.STOPPED, Job.category_id.in_(category_ids))
    for ref in stopped:
        check_money(ctx, ref)
