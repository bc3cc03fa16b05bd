"""Reviewing a job: score gold answers, block workers confidently below the bar, approve or
reject each assignment through the crowd; then turn a round's votes into human labels."""

from __future__ import annotations

import logging
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Select, case, func, select, update
from sqlalchemy.orm import Session

from lsun_crowd import crashpoints, ledger
from lsun_crowd.aggregate import Posterior, Votes
from lsun_crowd.classifier import Head
from lsun_crowd.config import QualityConfig
from lsun_crowd.consensus import PlattScaling, evidence_bound, model_share, with_model
from lsun_crowd.context import LABELED, SAMPLED, Context, JobRef, RoundRef, set_job_state, set_state
from lsun_crowd.crowd import AlreadyApproved, AssignmentStatus
from lsun_crowd.dawid_skene import dawid_skene
from lsun_crowd.embed import pick_device
from lsun_crowd.ids import round_origin
from lsun_crowd.publish import lay_out_job
from lsun_crowd.quality import assess
from lsun_crowd.schema import (
    AssignmentRow,
    CertificationItem,
    Gold,
    Hit,
    HitItemRow,
    Item,
    ItemRole,
    JobState,
    Label,
    LabelSource,
    Round,
    RoundItem,
    RoundModel,
    RoundState,
    Vote,
    Worker,
)

log = logging.getLogger(__name__)
# Pseudo-votes a worker's gold record in other categories counts for, at most: on the demo's three
# seeds, 10 gave 11 wrong human labels in all against 15 unscaled and 20 before categories ran side
# by side, with 13-15% fewer votes (docs/benchmarks.md).
GOLD_ELSEWHERE_WEIGHT = 10.0
# Votes a certification's image needs before people's label may contradict the model's. Against
# the base rate, two votes make a confident label, and two honest workers both slip on about 0.1%
# of clear images; three, on about 0.005%. Asked only where people contradict the model, so it
# costs a vote on a few images. It does not help on ambiguous images, where even honest workers
# split: on the simulated crowd, 2 of 341 checked auto-positives were true positives that got
# three "no" votes first (docs/guarantees.md, people's slips).
CONFIRM_VOTES = 3
REJECTION_FEEDBACK = "Your answers on our check images were too often wrong, so this work was not accepted."


def review(ctx: Context, ref: JobRef) -> JobState:
    """Review a collected job: score its gold answers, block the workers gold shows careless, and
    approve or reject each submitted assignment; each step commits on its own, so a crash resumes
    where it stopped."""
    assignments = select(AssignmentRow.id).join(Hit, Hit.id == AssignmentRow.hit_id).where(Hit.job_id == ref.id)
    _score_gold(ctx, assignments)
    _block_careless(ctx, ref)
    _decide_work(ctx, assignments)
    with ctx.store.session() as session:
        return set_job_state(session, ref, JobState.REVIEWED)


def _score_gold(ctx: Context, assignments: Select[int]) -> None:
    """Score the gold answers of ``assignments`` exactly once per assignment, in the same
    transaction as the flag."""
    with ctx.store.session() as session:
        unscored = (
            select(Vote.worker_id, Vote.answer, Gold.answer)
            .join(Gold, (Gold.item_id == Vote.item_id) & (Gold.category_id == Vote.category_id))
            .join(AssignmentRow, AssignmentRow.id == Vote.assignment_id)
            .where(Vote.is_gold, AssignmentRow.gold_scored.is_(False), AssignmentRow.id.in_(assignments))
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
        session.execute(update(AssignmentRow).where(AssignmentRow.id.in_(assignments)).values(gold_scored=True))


def _block_careless(ctx: Context, ref: JobRef) -> None:
    """Block, on the platform and then in the store, every worker whose gold record falls below
    the bar (``[quality]``)."""
    policy = ctx.config.quality
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


def _decide_work(ctx: Context, assignments: Select[int]) -> None:
    """Approve each submitted assignment of ``assignments``, or reject a blocked worker's where
    ``[quality] reject_blocked_work``; the platform first, then the store."""
    policy = ctx.config.quality
    with ctx.store.session() as session:
        pending = session.execute(
            select(AssignmentRow.id, AssignmentRow.platform_assignment_id, Worker.blocked)
            .join(Worker, Worker.id == AssignmentRow.worker_id)
            .where(AssignmentRow.id.in_(assignments), AssignmentRow.status == AssignmentStatus.SUBMITTED)
            .order_by(AssignmentRow.id)
        ).all()
    for row_id, platform_id, blocked in pending:
        rejected = blocked and policy.reject_blocked_work
        if rejected:
            try:
                ctx.crowd.reject(platform_id, REJECTION_FEEDBACK)
            except AlreadyApproved as error:  # paid already; its votes are discounted all the same
                log.warning("assignment %s stays approved: %s", platform_id, error)
                rejected = False
        else:
            ctx.crowd.approve(platform_id, "Thank you!")
        crashpoints.reached("approving")  # the platform has the decision; the store not yet
        with ctx.store.session() as session:
            session.execute(
                update(AssignmentRow)
                .where(AssignmentRow.id == row_id)
                .values(status=AssignmentStatus.REJECTED if rejected else AssignmentStatus.APPROVED)
            )


def label_by_humans(ctx: Context, ref: RoundRef) -> str:
    """Aggregate every vote of the category (earlier rounds and gold too, which measure the
    workers) and label this round's images whose posterior is confident enough.

    Adaptive redundancy: the round's images still below ``min_label_confidence`` go out again in a
    follow-up batch (state ``sampled``) for ``follow_up_votes`` more votes each, as long as that
    keeps the votes asked for them within ``max_votes_per_item``. Images still uncertain then go
    back to the pool. Calibration images (a certification's sample) may go on to
    ``cascade.calibration_max_votes``, and their votes may contradict the model's label only with
    at least :data:`CONFIRM_VOTES` of them (see :func:`lsun_crowd.certify.people_labels` for one
    still unresolved at the cap). No image is labeled against a clear majority of its own votes
    (:func:`decide_labels`): it gets more votes, or goes back to the pool at the cap. With
    ``max_votes_per_item == votes_per_item`` this is fixed redundancy (for training images). The
    round's images are few (one sample), so the lists here grow with the sample, not the pool.

    With ``model_consensus``, the previous round's model votes too on the round's training images,
    worth at most one good worker's vote (see :mod:`lsun_crowd.consensus`), and each label records
    the model's share in it; calibration images keep labels from people alone, since they are what
    the models are judged on.
    """
    crowd = ctx.config.crowd
    quality = ctx.config.quality
    with ctx.store.session() as session:
        posterior = human_posterior(session, ref.category_id, quality)
        evidence = None
        if posterior is not None and quality.model_consensus:
            posterior, evidence = _with_previous_model(ctx, ref, posterior)
        asked = _votes_asked(session, ref)
        labeled = _labeled_already(session, ref)
        decided = decide_labels(
            posterior,
            set(asked) - labeled,
            quality.min_label_confidence,
            crowd.min_votes_per_item,
            _checked_against(session, ref),
            evidence,
        )
        # An image without a single vote, or held back, is uncertain too.
        confidence = dict.fromkeys(asked, 0.0) | decided.confidence
        labels = decided.labels
        follow_up = int(session.scalar(select(Round.follow_up).where(Round.id == ref.id)) or 0)
        ledger.record_labels(
            session,
            ref.category_id,
            labels,
            source=LabelSource.HUMAN,
            origin=round_origin(ref.id, "human"),
            round_id=ref.id,
            reason=f"crowd votes, labeling pass {follow_up + 1} of round {ref.number}",
        )
        uncertain = _worth_more_votes(ctx, session, ref, asked, labeled, confidence)
        state, more = _next_pass(ctx, session, ref, uncertain, asked, follow_up)
    positives = sum(label.label for label in labels)
    message = f"{ref.category}: round {ref.number}: {len(labels)} images labeled by humans ({positives} positive)"
    ctx.progress.message(message + more)
    return state


def _next_pass(
    ctx: Context, session: Session, ref: RoundRef, uncertain: list[int], asked: dict[int, int], follow_up: int
) -> tuple[RoundState, str]:
    """The round's next state after a labeling pass, and what to add to its message: a follow-up
    batch for the images still uncertain, or, with none, the round labeled."""
    crowd = ctx.config.crowd
    if uncertain:
        follow_up += 1
        lay_out_job(ctx, session, ref, uncertain, follow_up, crowd.follow_up_votes)
        session.execute(update(Round).where(Round.id == ref.id).values(follow_up=follow_up))
        more = f"; {len(uncertain)} still uncertain get {crowd.follow_up_votes} more vote(s) each"
        return set_state(session, ref, SAMPLED), more
    requested = sum(asked.values())
    fixed = len(asked) * crowd.max_votes_per_item
    state = set_state(session, ref, LABELED, votes_requested=requested, votes_fixed=fixed)
    more = f"; {requested} votes asked where fixed redundancy asks {fixed}"
    return state, more if crowd.max_votes_per_item > crowd.votes_per_item else ""


def _votes_asked(session: Session, ref: RoundRef) -> dict[int, int]:
    """Votes asked for each of the round's images so far; the cap bounds these, so the money an
    image can cost is known before the round starts."""
    return {
        item: int(total)
        for item, total in session.execute(
            select(HitItemRow.item_id, func.sum(Hit.assignments_requested))
            .join(Hit, Hit.id == HitItemRow.hit_id)
            .where(Hit.round_id == ref.id, HitItemRow.is_gold.is_(False))
            .group_by(HitItemRow.item_id)
        )
    }


def _labeled_already(session: Session, ref: RoundRef) -> set[int]:
    """The round's images that have a label for its category."""
    return set(
        session.scalars(
            select(Label.item_id)
            .join(RoundItem, (RoundItem.item_id == Label.item_id) & (RoundItem.round_id == ref.id))
            .where(Label.category_id == ref.category_id)
        )
    )


def _checked_against(session: Session, ref: RoundRef) -> dict[int, int]:
    """A certification's images, with the model label each is checked against."""
    return dict(
        session.execute(
            select(CertificationItem.item_id, CertificationItem.label).where(CertificationItem.round_id == ref.id)
        ).all()
    )


def _worth_more_votes(
    ctx: Context,
    session: Session,
    ref: RoundRef,
    asked: dict[int, int],
    labeled: set[int],
    confidence: dict[int, float],
) -> list[int]:
    """The round's images still below the label bar that may take another batch of votes within
    their cap (a calibration image's is ``cascade.calibration_max_votes``), in id order."""
    crowd = ctx.config.crowd
    calibration = set(
        session.scalars(
            select(RoundItem.item_id).where(RoundItem.round_id == ref.id, RoundItem.role == ItemRole.CALIBRATION)
        )
    )
    calibration_cap = max(crowd.max_votes_per_item, ctx.config.cascade.calibration_max_votes)
    return sorted(
        item
        for item, votes in asked.items()
        if item not in labeled
        and votes + crowd.follow_up_votes <= (calibration_cap if item in calibration else crowd.max_votes_per_item)
        and confidence[item] < ctx.config.quality.min_label_confidence
    )


@dataclass(frozen=True)
class Decided:
    labels: list[ledger.NewLabel]
    confidence: dict[int, float]  # each image considered: its posterior, 0 where it is held back


def decide_labels(
    posterior: Posterior | None,
    wanted: Collection[int],
    min_confidence: float,
    min_votes: int,
    checked: Mapping[int, int],
    evidence: NDArray[np.float64] | None = None,
) -> Decided:
    """Which of the ``wanted`` images the posterior labels: those at least ``min_confidence`` sure
    on at least ``min_votes`` votes. Held back for more votes, whatever the posterior says: an
    image whose label would go against a clear majority of its own votes
    (:meth:`lsun_crowd.aggregate.Posterior.clear_majority`), and a certification's image
    (``checked``: its model label) whose votes contradict the model on fewer than
    :data:`CONFIRM_VOTES`. ``evidence``: the model's, where it voted, for each label's share."""
    if posterior is None:
        return Decided([], {})
    winners, certainty = posterior.labels(), posterior.confidence()
    majority = posterior.clear_majority()
    shares = model_share(posterior, evidence) if evidence is not None else np.zeros(len(posterior.items))
    labels: list[ledger.NewLabel] = []
    confidence: dict[int, float] = {}
    for index, item in enumerate(posterior.items):
        if item not in wanted:
            continue
        key = int(item)  # type: ignore[call-overload]
        count, winner = int(posterior.vote_counts[index]), int(winners[index])
        confidence[key] = 0.0
        if majority[index] >= 0 and winner != majority[index]:
            continue  # never against a clear majority of its own votes
        if key in checked and winner != checked[key] and count < CONFIRM_VOTES:
            continue  # a contradiction of the model waits for one more person
        confidence[key] = float(certainty[index])
        if certainty[index] >= min_confidence and count >= min_votes:
            labels.append(ledger.NewLabel(key, winner, float(certainty[index]), count, float(shares[index])))
    return Decided(labels, confidence)


def _with_previous_model(
    ctx: Context, ref: RoundRef, posterior: Posterior
) -> tuple[Posterior, NDArray[np.float64] | None]:
    """``posterior`` with the latest earlier round's calibrated model as one more annotator on this
    round's training images, its evidence bounded by one good worker's vote, and that evidence;
    unchanged (and ``None``) when no earlier round left a calibrated model."""
    with ctx.store.session() as session:
        model = session.execute(
            select(RoundModel)
            .join(Round, Round.id == RoundModel.round_id)
            .where(
                Round.category_id == ref.category_id,
                Round.number < ref.number,
                RoundModel.platt_slope.is_not(None),
            )
            .order_by(Round.number.desc())
            .limit(1)
        ).scalar_one_or_none()
        if model is None:
            return posterior, None
        training: dict[Hashable, str] = dict(
            session.execute(
                select(RoundItem.item_id, Item.sha256)
                .join(Item, Item.id == RoundItem.item_id)
                .where(RoundItem.round_id == ref.id, RoundItem.role == ItemRole.TRAIN)
            ).all()
        )
    assert model.platt_slope is not None and model.platt_intercept is not None and model.base_rate is not None
    platt = PlattScaling(model.platt_slope, model.platt_intercept, model.base_rate, model.calibration_size)
    rows = [index for index, item in enumerate(posterior.items) if item in training]
    head = Head.from_bytes(model.head, pick_device(ctx.config.model.device))
    scores = head.logits(ctx.embeddings().get([training[posterior.items[index]] for index in rows]))
    evidence = np.zeros(len(posterior.items))
    bound = evidence_bound(posterior)
    evidence[rows] = np.clip(platt.log_likelihood_ratio(scores), -bound, bound)
    return with_model(posterior, evidence), evidence


def human_posterior(session: Session, category_id: int, quality: QualityConfig) -> Posterior | None:
    """Gold-anchored Dawid–Skene over every vote of a category from workers not blocked.

    A worker who saw an image in two HITs (a follow-up can reach the same worker) counts once
    there, with the first answer; repeated gold answers all count, as evidence of the worker.
    """
    rows = session.execute(
        select(Vote.item_id, Worker.platform_worker_id, Vote.answer, Vote.is_gold, AssignmentRow.hit_id)
        .join(Worker, Worker.id == Vote.worker_id)
        .join(AssignmentRow, AssignmentRow.id == Vote.assignment_id)
        .where(Vote.category_id == category_id, Worker.blocked.is_(False))
    ).all()
    if not rows:
        return None
    seen: set[tuple[int, str]] = set()
    triples = []
    for item, worker, answer, is_gold, _ in sorted(rows, key=lambda row: (row[0], row[1], row[4])):
        if not is_gold and (item, worker) in seen:
            continue
        seen.add((item, worker))
        triples.append((item, worker, answer))
    # An order that does not depend on when each vote arrived, so that a resumed run sums in the
    # same order as an uninterrupted one, to the last bit.
    triples.sort()
    gold = dict(session.execute(select(Gold.item_id, Gold.answer).where(Gold.category_id == category_id)).all())
    votes = Votes.from_triples(triples, classes=(0, 1))
    known = {index: gold[item] for index, item in enumerate(votes.items) if item in gold}
    return dawid_skene(
        votes, known, quality.prior_correct, quality.prior_wrong, worker_prior=gold_elsewhere(session, category_id)
    )


def gold_elsewhere(session: Session, category_id: int) -> dict[Hashable, tuple[float, float]]:
    """Each worker's right and wrong gold answers in the other categories, as pseudo-votes: evidence
    of their care that this category's fit would otherwise learn only from its own gold (which is
    in the fit already, clamped). With categories running side by side, a worker found careless in
    one counts for less in all the others at once. Scaled to at most
    :data:`GOLD_ELSEWHERE_WEIGHT` answers, so that a worker's record on other questions sets their
    starting point here and this category's own evidence still decides."""
    right = func.sum(case((Vote.answer == Gold.answer, 1), else_=0))
    rows = session.execute(
        select(Worker.platform_worker_id, right, func.count(Vote.id))
        .join(Worker, Worker.id == Vote.worker_id)
        .join(Gold, (Gold.item_id == Vote.item_id) & (Gold.category_id == Vote.category_id))
        .where(Vote.is_gold, Vote.category_id != category_id, Worker.blocked.is_(False))
        .group_by(Worker.platform_worker_id)
    ).all()
    shrink = {worker: min(1.0, GOLD_ELSEWHERE_WEIGHT / total) for worker, _, total in rows}
    return {
        worker: (float(correct) * shrink[worker], float(total - correct) * shrink[worker])
        for worker, correct, total in rows
    }
