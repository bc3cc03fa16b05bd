"""Conflicts in single-label groups, sent back to people and settled.

An image in conflict in a group (:func:`lsun_crowd.multilabel.conflict`: positive for two of its
categories, or negative for all of an exhaustive group's) goes out in a *conflict job*: a crowd job
of kind ``repair`` outside any round, one HIT per image, asking every category of the group at once
with the multi-label template. Its answers name the categories each person ticked
(:func:`lsun_crowd.crowd.encode_choices`) and are stored as :class:`~lsun_crowd.schema.ChoiceVote`
rows. The job carries no gold, so people are judged by their gold record elsewhere: the work of a
worker blocked on gold is left out.

**Settling** is a multi-class majority over the group's categories (plus "none of these" where the
group is not exhaustive; in an exhaustive group "none" says nothing and counts for nothing). An
answer that ticks several categories splits its vote among them equally. An image is settled when
one choice holds more than half the counted vote and at least two answers (one where the group asks
one person); then that category becomes positive and the group's others negative, written as new
label events (source ``human``, origin ``conflict:<job id>``) with the reason, for each category
whose label changes. Gold answers are never revised. An image left unsettled stays held back and
goes out again, up to the group's ``attempts``.

A majority rather than Dawid–Skene: a conflict job asks a handful of people about a few images, too
little to fit a worker's eleven-class confusion matrix, and the labels it revises came from the
per-category fits already.

The runner sends a group's conflicts out on its own once every category of the group is finished;
:func:`repair_conflicts` (one non-blocking step) and :func:`run_conflicts` (until done) are the
explicit way, behind ``lsun-crowd conflicts``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from lsun_crowd import ledger
from lsun_crowd.config import GroupConfig
from lsun_crowd.context import Context, JobRef, job_refs
from lsun_crowd.crowd import decode_choices
from lsun_crowd.ids import conflict_batch, conflict_origin
from lsun_crowd.jobs import advance_job
from lsun_crowd.multilabel import conflict, conflict_count, conflicted_items
from lsun_crowd.schema import (
    ChoiceVote,
    Gold,
    GroupJob,
    Hit,
    HitItemRow,
    Job,
    JobKind,
    JobState,
    Label,
    LabelSource,
    Worker,
    utc_now,
)
from lsun_crowd.store import category_id

NONE = "none of these"


class GroupState(enum.StrEnum):
    MOVED = "moved"  # something happened this step
    WAITING = "waiting"  # a conflict job is out with the crowd
    STOPPED = "stopped"  # the budget or the balance cannot pay for the conflict job
    DONE = "done"  # no job out, and no conflict left that may still go to people


@dataclass(frozen=True)
class Settled:
    """How one image's answers came out."""

    item_id: int
    winner: str | None  # a category, NONE, or None when no choice holds a majority
    share: float  # of the counted vote
    answers: int


def group_category_ids(session: Session, group: GroupConfig) -> dict[str, int]:
    return {name: category_id(session, name) for name in group.categories}


def open_job(session: Session, group: GroupConfig) -> JobRef | None:
    """The group's conflict job not settled yet, if any (one at a time per group)."""
    rows = job_refs(
        session,
        Job.id.in_(select(GroupJob.job_id).where(GroupJob.group_name == group.name, GroupJob.resolved_at.is_(None))),
    )
    return rows[-1] if rows else None


def _eligible(session: Session, group: GroupConfig) -> list[int]:
    """Images in conflict in the group that have not been to people ``attempts`` times yet."""
    found = conflicted_items(session, group)
    if not found or group.attempts == 0:
        return []
    tries: dict[int, int] = {}
    for chunk in ledger.chunks(found):
        tries.update(
            (int(item), int(count))
            for item, count in session.execute(
                select(HitItemRow.item_id, func.count(func.distinct(Hit.job_id)))
                .join(Hit, Hit.id == HitItemRow.hit_id)
                .join(GroupJob, GroupJob.job_id == Hit.job_id)
                .where(GroupJob.group_name == group.name, HitItemRow.item_id.in_(chunk))
                .group_by(HitItemRow.item_id)
            )
        )
    return [item for item in found if tries.get(item, 0) < group.attempts]


def lay_out(ctx: Context, group: GroupConfig) -> JobRef | None:
    """Store a conflict job for the group's conflicted images that may still go to people: one
    HIT per image, ``votes`` people each. ``None`` when there is none."""
    with ctx.store.session() as session:
        items = _eligible(session, group)
        if not items:
            return None
        ids = group_category_ids(session, group)
        number = int(session.scalar(select(func.count()).where(GroupJob.group_name == group.name)) or 0) + 1
        job = Job(
            category_id=ids[group.categories[0]],  # a job names a category; the group's first stands for it
            round_id=None,
            kind=JobKind.REPAIR,
            sequence=number,
            batch_id=conflict_batch(ctx.project_key(), group.name, number),
            state=JobState.PENDING,
            assignments_per_hit=group.votes,
            notes=f"conflicts in group {group.name}: {len(items)} image(s)",
        )
        session.add(job)
        session.flush()
        session.add(GroupJob(job_id=job.id, group_name=group.name, categories=json.dumps(list(group.categories))))
        for chunk in ledger.chunks(items):
            hits = [
                Hit(
                    round_id=None,
                    job_id=job.id,
                    batch_id=job.batch_id,
                    hit_key=f"h{item:09d}",
                    assignments_requested=group.votes,
                )
                for item in chunk
            ]
            session.add_all(hits)
            session.flush()
            session.add_all(
                HitItemRow(hit_id=hit.id, position=0, item_id=item, is_gold=False)
                for hit, item in zip(hits, chunk, strict=True)
            )
        ref = job_refs(session, Job.id == job.id)[0]
    ctx.progress.message(f"{group.name}: {len(items)} conflicted image(s) go to people ({group.votes} each)")
    return ref


def tally(group: GroupConfig, answers: Sequence[frozenset[str]]) -> tuple[str | None, float]:
    """The choice the answers settle on (a category, :data:`NONE`, or ``None``) and its share of
    the counted vote; see the module's docstring for the rule."""
    weights: dict[str, float] = {}
    for chosen in answers:
        if not chosen:
            if not group.exhaustive:
                weights[NONE] = weights.get(NONE, 0.0) + 1.0
            continue
        for name in chosen:
            weights[name] = weights.get(name, 0.0) + 1.0 / len(chosen)
    total = sum(weights.values())
    if not total:
        return None, 0.0
    ranked = sorted(weights.items(), key=lambda pair: (-pair[1], pair[0]))
    winner, weight = ranked[0]
    share = weight / total
    named = sum((winner in chosen) if winner != NONE else not chosen for chosen in answers)
    if share <= 0.5 or named < min(2, group.votes):
        return None, share
    return winner, share


def _answers(session: Session, job_id: int, items: list[int], categories: list[str]) -> dict[int, list[frozenset[str]]]:
    """Each image's answers in the job, from workers not blocked, in the order they came."""
    answers: dict[int, list[frozenset[str]]] = {item: [] for item in items}
    for item, choices in session.execute(
        select(ChoiceVote.item_id, ChoiceVote.choices)
        .join(Worker, Worker.id == ChoiceVote.worker_id)
        .where(ChoiceVote.job_id == job_id, Worker.blocked.is_(False))
        .order_by(ChoiceVote.item_id, ChoiceVote.id)
    ):
        answers.setdefault(int(item), []).append(decode_choices(choices, categories))
    return answers


def _revise(
    session: Session,
    job_id: int,
    ids: dict[str, int],
    changes: dict[str, list[ledger.NewLabel]],
    reasons: dict[str, str],
) -> None:
    """Write the labels a conflict job changed: one event per image and category, each with its
    own reason (``reasons["category:item"]``)."""
    for name, labels in changes.items():
        for label in labels:
            ledger.revise_labels(
                session,
                ids[name],
                [label],
                source=LabelSource.HUMAN,
                origin=conflict_origin(job_id),
                job_id=job_id,
                reason=reasons[f"{name}:{label.item_id}"],
            )


def settle_conflict_job(ctx: Context, ref: JobRef, group: GroupConfig) -> list[Settled]:
    """Aggregate a reviewed conflict job's answers and write the labels they settle, in one
    transaction with the job's mark as settled (so a replay writes nothing twice)."""
    with ctx.store.session() as session:
        record = session.get(GroupJob, ref.id)
        if record is None or record.resolved_at is not None:
            return []
        categories = json.loads(record.categories)
        ids = group_category_ids(session, group)
        items = [
            int(item)
            for item in session.scalars(
                select(HitItemRow.item_id).join(Hit, Hit.id == HitItemRow.hit_id).where(Hit.job_id == ref.id)
            )
        ]
        answers = _answers(session, ref.id, items, categories)
        current = _current(session, ids, items)
        settled: list[Settled] = []
        changes: dict[str, list[ledger.NewLabel]] = {name: [] for name in group.categories}
        reasons: dict[str, str] = {}
        for item in items:
            winner, share = tally(group, answers[item])
            settled.append(Settled(item, winner, share, len(answers[item])))
            if winner is None:
                continue
            labels, gold = current.get(item, ({}, set()))
            problem = conflict(group, labels) or "in conflict"
            chose = sum(winner in chosen or (winner == NONE and not chosen) for chosen in answers[item])
            reason = f"conflict in group {group.name}: {problem}; {chose} of {len(answers[item])} people chose {winner}"
            for name in group.categories:
                new = int(name == winner)
                if name in gold or labels.get(name) == new:
                    continue  # gold is known, not labeled; an unchanged label needs no event
                changes[name].append(ledger.NewLabel(item, new, round(share, 6), len(answers[item])))
                reasons[f"{name}:{item}"] = reason
        _revise(session, ref.id, ids, changes, reasons)
        done = sum(entry.winner is not None for entry in settled)
        session.execute(
            update(GroupJob)
            .where(GroupJob.job_id == ref.id)
            .values(resolved_at=utc_now(), resolved=done, unresolved=len(settled) - done)
        )
    ctx.progress.message(
        f"{group.name}: conflict job {ref.job.sequence}: {done} of {len(settled)} image(s) settled by people"
    )
    return settled


def _current(
    session: Session, ids: dict[str, int], items: list[int]
) -> dict[int, tuple[dict[str, int | None], set[str]]]:
    """Each image's labels in the group (gold answers included), and which of them are gold."""
    names = {cat_id: name for name, cat_id in ids.items()}
    found: dict[int, tuple[dict[str, int | None], set[str]]] = {}
    for chunk in ledger.chunks(items):
        for item, cat_id, label in session.execute(
            select(Label.item_id, Label.category_id, Label.label).where(
                Label.item_id.in_(chunk), Label.category_id.in_(list(names))
            )
        ):
            found.setdefault(int(item), ({}, set()))[0][names[cat_id]] = int(label)
        for item, cat_id, answer in session.execute(
            select(Gold.item_id, Gold.category_id, Gold.answer).where(
                Gold.item_id.in_(chunk), Gold.category_id.in_(list(names))
            )
        ):
            entry = found.setdefault(int(item), ({}, set()))
            entry[0][names[cat_id]] = int(answer)
            entry[1].add(names[cat_id])
    return found


def advance_group(ctx: Context, group: GroupConfig, collect: bool = False) -> GroupState:
    """Do what is due now for the group's conflicts, without waiting: settle a reviewed job, move
    the open one on (money, publish, review; with ``collect`` also store what arrived, otherwise
    the runner's poll does), or lay out a job for conflicts that may still go to people."""
    with ctx.store.session() as session:
        ref = open_job(session, group)
    if ref is None:
        ref = lay_out(ctx, group)
        if ref is None:
            return GroupState.DONE
    state = ref.state
    if state == JobState.STOPPED:
        return GroupState.STOPPED
    moved = advance_job(ctx, ref, collect=collect)
    with ctx.store.session() as session:
        state = JobState(session.scalars(select(Job.state).where(Job.id == ref.id)).one())
    if state == JobState.REVIEWED:
        settle_conflict_job(ctx, ref, group)
        return GroupState.MOVED
    if state == JobState.STOPPED:
        return GroupState.STOPPED
    return GroupState.MOVED if moved else GroupState.WAITING


def poll_categories(ctx: Context, groups: Sequence[GroupConfig]) -> list[int]:
    """The category ids the groups' open conflict jobs are filed under, for the runner's poll."""
    with ctx.store.session() as session:
        refs = [open_job(session, group) for group in groups]
    return sorted({ref.category_id for ref in refs if ref is not None})


def chosen_groups(ctx: Context, names: Sequence[str] | None = None) -> list[GroupConfig]:
    groups = ctx.config.project.groups
    if not names:
        return list(groups)
    known = {group.name: group for group in groups}
    unknown = [name for name in names if name not in known]
    if unknown:
        listed = ", ".join(known) or "none: declare them as [[project.groups]]"
        raise ValueError(f"--group: no group named {unknown[0]!r} (the project's groups: {listed})")
    return [known[name] for name in names]


def repair_conflicts(ctx: Context, groups: Sequence[str] | None = None, collect: bool = True) -> dict[str, GroupState]:
    """One step for each group's conflicts (all groups, or those named), without waiting: the one
    function label-error repair and the command line call. Returns where each group stands."""
    return {group.name: advance_group(ctx, group, collect=collect) for group in chosen_groups(ctx, groups)}


@dataclass(frozen=True)
class GroupReport:
    group: str
    state: str  # a GroupState
    jobs: int
    settled: int
    unsettled: int
    conflicts: int  # images in conflict now (held back from the export)


def run_conflicts(
    ctx: Context,
    groups: Sequence[str] | None = None,
    once: bool = False,
    on_pass: Callable[[], None] | None = None,
) -> list[GroupReport]:
    """Step every group's conflicts until each is done or out of money (one step with ``once``),
    sleeping ``poll_seconds`` between steps that moved nothing."""
    chosen = chosen_groups(ctx, groups)
    states: dict[str, GroupState] = {}
    while True:
        states = {group.name: advance_group(ctx, group, collect=True) for group in chosen}
        if on_pass is not None:
            on_pass()
        if once or all(state in (GroupState.DONE, GroupState.STOPPED) for state in states.values()):
            break
        if all(state == GroupState.WAITING for state in states.values()):
            ctx.sleep(ctx.config.crowd.poll_seconds)
    return [report(ctx, group, states[group.name]) for group in chosen]


def report(ctx: Context, group: GroupConfig, state: GroupState) -> GroupReport:
    with ctx.store.session() as session:
        jobs, settled, unsettled = session.execute(
            select(
                func.count(GroupJob.job_id),
                func.coalesce(func.sum(GroupJob.resolved), 0),
                func.coalesce(func.sum(GroupJob.unresolved), 0),
            ).where(GroupJob.group_name == group.name)
        ).one()
        now = conflict_count(session, group)
    return GroupReport(group.name, state.value, int(jobs), int(settled), int(unsettled), now)
