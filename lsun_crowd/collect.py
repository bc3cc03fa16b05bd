"""Collecting: one poll of every open HIT of every published job, without waiting.

A poll asks the platform for the state of the open HITs (in pages of :data:`PAGE`), lists the
assignments of those with new submissions, and stores each new assignment and its votes. Votes are
unique per assignment and image, so an assignment listed twice, or again after a crash, is stored
once. A job whose HITs are all complete or expired is collected. A job past its collection
deadline has its open HITs expired on the platform first, and only then given up on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, update

from lsun_crowd import crashpoints
from lsun_crowd.context import Context, job_refs, set_job_state
from lsun_crowd.crowd import NO, YES, Assignment, HitState, HitStatus, VirtualClock, decode_choices, encode_choices
from lsun_crowd.schema import AssignmentRow, ChoiceVote, GroupJob, Hit, HitItemRow, Job, JobState, Meta, Vote, Worker
from lsun_crowd.store import insert_ignoring_duplicates

log = logging.getLogger(__name__)
ANSWER_VALUES = {YES: 1, NO: 0}
PAGE = 100  # HITs per status request and per store transaction
READ_AGAIN = 5  # a finished HIT's short listing, or a short status answer, is asked again this often
POLLS_KEY = "polls"  # polls finished
ASKED_KEY = "polls_asked"  # the latest poll whose clock the platform was set to, finished or not


@dataclass(frozen=True)
class OpenHit:
    row_id: int
    platform_id: str
    job_id: int
    category_id: int
    known: int  # assignments stored so far


@dataclass(frozen=True)
class PollResult:
    assignments: int = 0  # new assignments stored
    closed_hits: int = 0
    collected_jobs: int = 0

    @property
    def moved(self) -> bool:
        return bool(self.assignments or self.closed_hits or self.collected_jobs)


def _meta_count(ctx: Context, key: str) -> int:
    with ctx.store.session() as session:
        row = session.get(Meta, key)
        return int(row.value) if row is not None else 0


def polls_so_far(ctx: Context) -> int:
    return _meta_count(ctx, POLLS_KEY)


def sync_clock(ctx: Context) -> None:
    """A simulated platform's clock is the runner's count of polls, kept in the store, so a poll
    repeated after a crash sees the platform exactly as the first attempt did.

    After a crash mid-poll the clock is that poll's, not the last finished one's: the assignments
    it stored were submitted by then, and reviewing them at an earlier time would find them not
    yet submitted."""
    if isinstance(ctx.crowd, VirtualClock):
        ctx.crowd.set_clock(max(polls_so_far(ctx), _meta_count(ctx, ASKED_KEY)))


def _overdue_jobs(ctx: Context, category_ids: Sequence[int]) -> set[int]:
    """The published jobs past their collection deadline. One reading of the clock per poll: a HIT
    is given up on only after the platform was told."""
    now = time.time()
    with ctx.store.session() as session:
        return set(
            session.scalars(
                select(Job.id).where(
                    Job.state == JobState.PUBLISHED, Job.category_id.in_(category_ids), Job.collect_deadline < now
                )
            )
        )


def _read_hit(ctx: Context, hit: OpenHit, status: HitStatus) -> int:
    """Store what the platform lists of a HIT whose count or state changed; returns the new
    assignments. A finished HIT's listing short of the platform's own count (a partial page) is
    read again at once, so that what a poll collects does not depend on the platform's paging.
    An open HIT is simply read again at the next poll."""
    if status.submitted == hit.known and status.state == HitState.OPEN:
        return 0
    added = store_assignments(ctx, hit.category_id, hit.row_id, hit.platform_id)
    for _ in range(READ_AGAIN if status.state != HitState.OPEN else 0):
        if hit.known + added >= status.submitted:
            break
        added += store_assignments(ctx, hit.category_id, hit.row_id, hit.platform_id)
    if status.state != HitState.OPEN and hit.known + added < status.submitted:
        log.warning(
            "HIT %s: the platform counts %d submitted assignment(s) but listed %d, %d times over; "
            "taking what it listed",
            hit.platform_id,
            status.submitted,
            hit.known + added,
            READ_AGAIN + 1,
        )
    return added


def poll(
    ctx: Context,
    category_ids: Sequence[int],
    progress: Callable[[int, int], None] | None = None,
    job_id: int | None = None,
) -> PollResult:
    """One poll of the published jobs of these categories (or of one job); ``progress(job id, new
    assignments)`` hears of what arrived."""
    page = _open_hits(ctx, category_ids, -1, job_id)
    if not page:
        return PollResult(collected_jobs=_finish_collected_jobs(ctx, category_ids))
    number = polls_so_far(ctx) + 1
    if isinstance(ctx.crowd, VirtualClock):
        with ctx.store.session() as session:
            session.merge(Meta(key=ASKED_KEY, value=str(number)))
        ctx.crowd.set_clock(number)
    overdue = _overdue_jobs(ctx, category_ids)
    result = PollResult()
    while page:
        expiring = [hit.platform_id for hit in page if hit.job_id in overdue]
        if expiring:
            ctx.crowd.expire(expiring)
        by_platform_id = {hit.platform_id: hit for hit in page}
        for status in hit_statuses(ctx, [hit.platform_id for hit in page]):
            hit = by_platform_id[status.hit_id]
            added = _read_hit(ctx, hit, status)
            if added and progress is not None:
                progress(hit.job_id, added)
            closed = status.state != HitState.OPEN or hit.job_id in overdue
            if closed:
                final = HitState.EXPIRED if status.state == HitState.OPEN else status.state
                with ctx.store.session() as session:
                    session.execute(update(Hit).where(Hit.id == hit.row_id).values(state=final))
            result = PollResult(result.assignments + added, result.closed_hits + int(closed))
        page = _open_hits(ctx, category_ids, page[-1].row_id, job_id)
    crashpoints.reached("polled")  # the poll's HITs stored and closed; the poll not yet counted
    collected = _finish_collected_jobs(ctx, category_ids)
    with ctx.store.session() as session:
        session.merge(Meta(key=POLLS_KEY, value=str(number)))
    return PollResult(result.assignments, result.closed_hits, collected)


def hit_statuses(ctx: Context, hit_ids: list[str]) -> list[HitStatus]:
    """The platform's status of each HIT; those a short answer left out are asked about again
    (a few times), and any still missing wait for the next poll."""
    found = {status.hit_id: status for status in ctx.crowd.hit_status(hit_ids)}
    for _ in range(READ_AGAIN):
        missing = [hit_id for hit_id in hit_ids if hit_id not in found]
        if not missing:
            break
        found.update((status.hit_id, status) for status in ctx.crowd.hit_status(missing))
    return [found[hit_id] for hit_id in hit_ids if hit_id in found]


def _open_hits(ctx: Context, category_ids: Sequence[int], after: int, job_id: int | None = None) -> list[OpenHit]:
    with ctx.store.session() as session:
        query = (
            select(Hit.id, Hit.platform_hit_id, Hit.job_id, Job.category_id)
            .join(Job, Job.id == Hit.job_id)
            .where(
                Job.state == JobState.PUBLISHED,
                Job.category_id.in_(category_ids),
                Hit.state == HitState.OPEN,
                Hit.platform_hit_id.is_not(None),
                Hit.id > after,
            )
            .order_by(Hit.id)
            .limit(PAGE)
        )
        hits = session.execute(query if job_id is None else query.where(Hit.job_id == job_id)).all()
        known = dict(
            session.execute(
                select(AssignmentRow.hit_id, func.count(AssignmentRow.id))
                .where(AssignmentRow.hit_id.in_([row.id for row in hits]))
                .group_by(AssignmentRow.hit_id)
            ).all()
        )
    return [
        OpenHit(row.id, str(row.platform_hit_id), int(row.job_id), int(row.category_id), int(known.get(row.id, 0)))
        for row in hits
    ]


def _finish_collected_jobs(ctx: Context, category_ids: Sequence[int]) -> int:
    """Published jobs with no open HIT left are collected."""
    with ctx.store.session() as session:
        still_open = select(Hit.id).where(Hit.job_id == Job.id, Hit.state == HitState.OPEN).exists()
        done = job_refs(session, Job.state == JobState.PUBLISHED, Job.category_id.in_(category_ids), ~still_open)
        for ref in done:
            set_job_state(session, ref, JobState.COLLECTED)
    return len(done)


def store_assignments(ctx: Context, cat_id: int, hit_row_id: int, platform_hit_id: str) -> int:
    """Store a HIT's new assignments and their votes. Returns how many assignments were new."""
    assignments = ctx.crowd.list_assignments(platform_hit_id)
    crashpoints.reached("listed")
    with ctx.store.session() as session:
        known = set(
            session.scalars(select(AssignmentRow.platform_assignment_id).where(AssignmentRow.hit_id == hit_row_id))
        )
        # An assignment listed twice (a platform's page repeated) is one assignment, and they are
        # stored in the order they were submitted, whatever order the platform listed them in.
        unique = {a.assignment_id: a for a in assignments if a.assignment_id not in known}
        fresh = sorted(unique.values(), key=lambda a: (a.submitted_at, a.assignment_id))
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
        group = session.scalar(select(GroupJob).join(Hit, Hit.job_id == GroupJob.job_id).where(Hit.id == hit_row_id))
        if group is not None:
            insert_ignoring_duplicates(session, ChoiceVote, choice_votes(group, fresh, layout, row_ids, worker_ids))
            return len(fresh)
        insert_ignoring_duplicates(session, Vote, _yes_no_votes(cat_id, fresh, layout, row_ids, worker_ids))
    return len(fresh)


def _yes_no_votes(
    cat_id: int,
    fresh: list[Assignment],
    layout: dict[int, bool],
    row_ids: dict[str, int],
    worker_ids: dict[str, int],
) -> list[dict[str, object]]:
    """The vote rows of new assignments to a yes/no HIT (``layout``: its images, each with whether
    it is gold). An answer for an image not in the HIT, or neither yes nor no, is logged and left
    out alone: the assignment's other answers are kept."""
    votes: list[dict[str, object]] = []
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
    return votes


def choice_votes(
    group: GroupJob,
    fresh: Sequence[Assignment],
    layout: dict[int, bool],
    row_ids: dict[str, int],
    worker_ids: dict[str, int],
) -> list[dict[str, object]]:
    """The rows of a multi-label job's answers: the categories each assignment ticked per image.
    An answer the job did not ask for (another image, a category outside the group) is left out
    and logged."""
    categories = json.loads(group.categories)
    rows: list[dict[str, object]] = []
    for assignment in fresh:
        for key, answer in assignment.answers.items():
            item_id = int(key) if key.isdigit() else None
            try:
                if item_id not in layout:
                    raise ValueError("not an image of this HIT")
                chosen = decode_choices(answer, categories)
            except ValueError as reason:
                log.warning(
                    "assignment %s: ignored answer %r for %r: %s", assignment.assignment_id, answer, key, reason
                )
                continue
            rows.append(
                {
                    "assignment_id": row_ids[assignment.assignment_id],
                    "job_id": group.job_id,
                    "item_id": item_id,
                    "worker_id": worker_ids[assignment.worker_id],
                    "choices": encode_choices(chosen),
                }
            )
    return rows
