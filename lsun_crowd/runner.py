"""The runner: every category's rounds and jobs moved on side by side, in one loop.

A pass moves every category as far as it can go without waiting (sample, check money, publish,
review, label, train, split), then polls the platform once for every open HIT of every category.
The loop sleeps ``poll_seconds`` only when a pass moved nothing. So every category's HITs are out
at once, and a category whose votes are in trains and splits without waiting for the others. The
money check counts what every job has spent or been promised, so categories publishing side by
side never overspend together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lsun_crowd import autolabel, certify, ledger
from lsun_crowd.collect import poll, sync_clock
from lsun_crowd.conflicts import GroupState, advance_group, poll_categories
from lsun_crowd.context import Context, RoundRef
from lsun_crowd.jobs import recheck_stopped
from lsun_crowd.publish import Shortfall, shortfall_of
from lsun_crowd.repair import RepairStep
from lsun_crowd.repair import after_round as repair_after_round
from lsun_crowd.rounds import advance_round, latest_round, sample_round
from lsun_crowd.schema import AssignmentRow, Hit, Job, JobState, Round, RoundKind, RoundState
from lsun_crowd.store import category_id


class Outcome(StrEnum):
    RESOLVED = "resolved"
    ROUND_LIMIT = "round limit"
    BUDGET = "budget"
    BALANCE = "balance"
    RUNNING = "running"  # only after ``once``: still work to do


@dataclass(frozen=True)
class CategoryOutcome:
    category: str
    rounds: int  # rounds that sampled the pool (certification rounds aside)
    reason: Outcome
    detail: str = ""  # why a category stopped for money, in the words its round recorded


@dataclass(frozen=True)
class RunningCategory:
    """A category the runner advances: its name and its id in the store."""

    name: str
    id: int


def split_rounds(session: Session, category_id: int) -> int:
    """The category's rounds that sampled its pool (certifications do not count to the round limit)."""
    return int(
        session.scalar(select(func.count()).where(Round.category_id == category_id, Round.kind == RoundKind.SPLIT)) or 0
    )


class Runner:
    """Runs the given categories until each is resolved, at its round limit or out of money."""

    def __init__(self, context: Context, categories: list[str], max_rounds: int) -> None:
        if not categories:
            raise ValueError("no categories: list them in [project] categories of lsun-crowd.toml")
        self.context = context
        self.max_rounds = max_rounds
        with context.store.session() as session:
            self.categories = [RunningCategory(name, category_id(session, name)) for name in categories]
        self.outcomes: dict[str, CategoryOutcome] = {}
        self._tasks: dict[int, str] = {}
        # Single-label groups whose categories all run here: their conflicts go to people once
        # every one of those categories is finished (lsun_crowd.conflicts).
        self.groups = [group for group in context.config.project.groups if set(group.categories) <= set(categories)]
        self.group_states: dict[str, GroupState] = {}

    def run(self, once: bool = False, on_pass: Callable[[], None] | None = None) -> list[CategoryOutcome]:
        """Pass after pass until every category is finished (one pass with ``once``); ``on_pass``
        is called after each pass (the run lock's heartbeat)."""
        ctx = self.context
        # Embed the pool first: an image that cannot be read leaves the pool before anyone sees it.
        ctx.embeddings()
        sync_clock(ctx)
        recheck_stopped(ctx, [category.id for category in self.categories])
        while True:
            moved = self.run_pass()
            if on_pass is not None:
                on_pass()
            if once or (len(self.outcomes) == len(self.categories) and self._groups_finished()):
                break
            if not moved:
                ctx.sleep(ctx.config.crowd.poll_seconds)
        return [self.outcome(category) for category in self.categories]

    def run_pass(self) -> bool:
        """One pass: move every unfinished category, then poll every open HIT once."""
        moved = False
        for category in self.categories:
            if category.name not in self.outcomes:
                moved |= self._advance_category(category)
        moved |= self._advance_groups()
        waiting = [category.id for category in self.categories if category.name not in self.outcomes]
        waiting += poll_categories(self.context, self.groups) if self.groups else []
        if waiting:
            with self.context.stages.timed("collect"):
                result = poll(self.context, waiting, self._progress)
            moved |= result.moved
            self._finish_progress()
        return moved

    def _advance_groups(self) -> bool:
        """Conflicts of each group whose categories are all finished, moved on one step."""
        moved = False
        for group in self.groups:
            if all(name in self.outcomes for name in group.categories):
                self.group_states[group.name] = advance_group(self.context, group)
                moved |= self.group_states[group.name] == GroupState.MOVED
        return moved

    def _groups_finished(self) -> bool:
        finished = (GroupState.DONE, GroupState.STOPPED)
        return all(self.group_states.get(group.name) in finished for group in self.groups)

    def outcome(self, category: RunningCategory) -> CategoryOutcome:
        found = self.outcomes.get(category.name)
        if found is not None:
            return found
        with self.context.store.session() as session:
            return CategoryOutcome(category.name, split_rounds(session, category.id), Outcome.RUNNING)

    def _advance_category(self, category: RunningCategory) -> bool:
        """Move the category's current round on until it waits on the crowd or the category is
        finished; a finished category gets its outcome."""
        ctx = self.context
        moved = False
        while True:
            latest = latest_round(ctx, category.id)
            if latest is not None and latest.state == RoundState.STOPPED:
                notes = latest.notes or Shortfall.BUDGET
                reason = Outcome(shortfall_of(notes))
                with ctx.store.session() as session:
                    done = split_rounds(session, category.id) - (latest.kind == RoundKind.SPLIT)
                self.outcomes[category.name] = CategoryOutcome(category.name, done, reason, notes)
                return moved
            if latest is None or latest.state == RoundState.DONE:
                number = latest.number if latest else 0
                with ctx.store.session() as session:
                    remaining = ledger.pool_size(session, category.id)
                    splits = split_rounds(session, category.id)
                    uncertified = certify.pending(session, category.id, number + 1)
                finishing = remaining == 0 or splits >= self.max_rounds
                if latest is not None and finishing and uncertified:
                    # The rounds are over: the latest model splits again whatever the rounds'
                    # models labeled, where that pays; then people check a sample of the labels.
                    autolabel.final_split(ctx, RoundRef(category.name, category.id, latest))
                    certification = certify.sample_certification(ctx, category.name, category.id, number + 1)
                    if certification is not None:
                        latest = certification
                        moved = True
                        if not advance_round(ctx, RoundRef(category.name, category.id, latest)):
                            return moved
                        continue
                if latest is not None:
                    # Label-error repair after the round: the category waits for it, the others go on.
                    step = repair_after_round(ctx, category.name, category.id, latest, finishing)
                    if step == RepairStep.WAITING:
                        return moved
                    if step == RepairStep.MOVED:
                        moved = True
                        continue
                if remaining == 0:
                    self.outcomes[category.name] = CategoryOutcome(category.name, splits, Outcome.RESOLVED)
                    return moved
                if splits >= self.max_rounds:
                    self.outcomes[category.name] = CategoryOutcome(category.name, splits, Outcome.ROUND_LIMIT)
                    return moved
                latest = sample_round(ctx, category.name, category.id, number + 1)
                moved = True
            if not advance_round(ctx, RoundRef(category.name, category.id, latest)):
                return moved
            moved = True

    def _progress(self, job_id: int, added: int) -> None:
        """A progress bar per job, counting its assignments."""
        task = self._tasks.get(job_id)
        if task is None:
            with self.context.store.session() as session:
                batch = session.scalar(select(Job.batch_id).where(Job.id == job_id))
                requested = session.scalar(select(func.sum(Hit.assignments_requested)).where(Hit.job_id == job_id))
                known = session.scalar(
                    select(func.count(AssignmentRow.id))
                    .join(Hit, Hit.id == AssignmentRow.hit_id)
                    .where(Hit.job_id == job_id)
                )
            task = f"{batch}: assignments"
            self._tasks[job_id] = task
            self.context.progress.start(task, int(requested or 0))
            added = int(known or 0)
        self.context.progress.advance(task, added)

    def _finish_progress(self) -> None:
        if not self._tasks:
            return
        with self.context.store.session() as session:
            open_jobs = set(
                session.scalars(select(Job.id).where(Job.id.in_(list(self._tasks)), Job.state == JobState.PUBLISHED))
            )
        for job_id in [job for job in self._tasks if job not in open_jobs]:
            self.context.progress.finish(self._tasks.pop(job_id))
