"""Training the round's model on every human label so far and letting it label the pool.

The pool is streamed: scored from the memory-mapped embedding cache and labeled in chunks of
:data:`lsun_crowd.ledger.CHUNK` images inside the round's one closing transaction, so memory stays
bounded whatever the pool's size, and a crash leaves either all of the split or none of it.

Thresholds come from the round's own calibration sample (:mod:`lsun_crowd.guarantee`): drawn at
random from the pool this round splits, labeled by people alone, never trained on before the
split, every image counted once, and an image people could not resolve counted against the
model. The round tests at the share of each side's error budget left by earlier rounds, so the
guarantee covers every image the model labels in the category. After the split its calibration
images train the later rounds' models, which are judged on fresh samples of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from lsun_crowd import ledger
from lsun_crowd.classifier import probability, train_head
from lsun_crowd.consensus import MIN_CALIBRATION_LABELS, PlattScaling, fit_platt
from lsun_crowd.context import DONE, Context, RoundRef, set_state
from lsun_crowd.engine import engine_for
from lsun_crowd.guarantee import (
    UNRESOLVED,
    Calibration,
    SideTest,
    Walk,
    certify_negative,
    certify_positive,
    decide,
)
from lsun_crowd.heap import frozen_heap
from lsun_crowd.review import human_posterior
from lsun_crowd.round_plan import budget_left, discard_limit, known_positives_before, pool_base_rate
from lsun_crowd.schema import (
    Gold,
    GuaranteeSide,
    Item,
    ItemRole,
    Label,
    LabelSource,
    RoundItem,
    RoundModel,
    RoundTest,
    utc_now,
)


def train_and_split(ctx: Context, ref: RoundRef) -> str:
    cascade = ctx.config.cascade
    if ref.round.human_only:
        with ctx.store.session() as session:
            return set_state(session, ref, DONE, finished_at=utc_now())
    with ctx.store.session() as session:
        this_calibration = select(RoundItem.item_id).where(
            RoundItem.round_id == ref.id, RoundItem.role == ItemRole.CALIBRATION
        )
        training: list[tuple[str, int, float]] = [
            (sha, label, confidence)
            for sha, label, confidence in session.execute(
                select(Item.sha256, Label.label, Label.confidence)
                .join(Label, Label.item_id == Item.id)
                .where(
                    Label.category_id == ref.category_id,
                    Label.source == LabelSource.HUMAN,
                    Item.id.notin_(this_calibration),
                )
                .order_by(Item.id)
            )
        ]
        training += [
            (sha, answer, 1.0)
            for sha, answer in session.execute(
                select(Item.sha256, Gold.answer)
                .join(Gold, Gold.item_id == Item.id)
                .where(Gold.category_id == ref.category_id)
                .order_by(Item.id)
            )
        ]
        # Every image drawn for calibration, labeled or not: people's label, or UNRESOLVED.
        calibration_rows: list[tuple[int, str, int]] = [
            (item, sha, label)
            for item, sha, label in session.execute(
                select(Item.id, Item.sha256, func.coalesce(Label.label, UNRESOLVED))
                .join(RoundItem, RoundItem.item_id == Item.id)
                .outerjoin(
                    Label,
                    (Label.item_id == Item.id)
                    & (Label.category_id == ref.category_id)
                    & (Label.source == LabelSource.HUMAN),
                )
                .where(RoundItem.round_id == ref.id, RoundItem.role == ItemRole.CALIBRATION)
                .order_by(Item.id)
            )
        ]
        calibration_labels = _consensus_at_the_cap(ctx, session, ref, calibration_rows)
        budget = budget_left(session, ref.category_id, ref.number, cascade)
        pool_rate = pool_base_rate(session, ref.category_id, ref.number)
        # Positives known before this round's calibration labels, and the pool its sample came from.
        known_positives = known_positives_before(
            session, ref.category_id, cascade.target_precision, sum(label == 1 for _, _, label in calibration_rows)
        )
        pool = ledger.pool_size(session, ref.category_id) + int(
            session.scalar(select(func.count()).select_from(RoundItem).where(RoundItem.round_id == ref.id)) or 0
        )
    targets = np.array([label for _, label, _ in training], dtype=np.float64)
    embeddings = ctx.embeddings()
    if len(set(targets.tolist())) < 2 or not calibration_rows:
        note = "no split: training needs both classes and calibration needs images"
        ctx.progress.message(f"{ref.category}: round {ref.number}: {note}")
        with ctx.store.session() as session:
            return set_state(session, ref, DONE, notes=note, finished_at=utc_now())
    with ctx.stages.timed("train", ref.number):
        head = train_head(
            embeddings.get([sha for sha, _, _ in training]),
            targets,
            np.array([confidence for _, _, confidence in training], dtype=np.float64),
            ctx.config.model,
            seed=ctx.config.project.seed * 1_000_003 + ref.category_id * 101 + ref.number,
        )
    with ctx.stages.timed("split", ref.number):
        calibration = Calibration(
            head.logits(embeddings.get([sha for _, sha, _ in calibration_rows])), calibration_labels
        )
    delta_positive, delta_negative, recall_slack = budget.positive, budget.negative, budget.recall_slack
    # How many calibration images each side may expect, from the pool's positive share as the
    # previous round left it, or the labels the model trained on (never this round's calibration
    # labels): it plans each side's walk.
    base_rate = pool_rate if pool_rate is not None else float(targets.mean())
    with ctx.stages.timed("split", ref.number):
        positive = certify_positive(
            calibration,
            cascade.target_precision,
            delta_positive,
            Walk.plan(cascade.target_precision, delta_positive, calibration.size * base_rate),
        )
        negative = certify_negative(
            calibration,
            cascade.target_npv,
            delta_negative,
            recall_slack,
            below=positive.threshold if positive.threshold is not None else math.inf,
            walk=Walk.plan(cascade.target_npv, delta_negative, calibration.size * (1 - base_rate)),
            discard_limit=discard_limit(recall_slack, known_positives, pool, base_rate),
        )
    resolved = calibration.labels != UNRESOLVED
    undecided = decide(calibration.scores, positive.threshold, negative.threshold) < 0
    # A model label's confidence is its calibrated probability of being right (the audit's PPI++
    # intervals use it); the raw sigmoid when the calibration is too small to fit.
    calibrated = fit_platt(calibration.scores[resolved], calibration.labels[resolved], MIN_CALIBRATION_LABELS)
    # The next round's consensus uses the model on images the split left behind, so it is
    # calibrated on the calibration images the split would have left behind too, or on all of
    # them when those are too few.
    left_behind = resolved & undecided
    consensus = (
        fit_platt(calibration.scores[left_behind], calibration.labels[left_behind], MIN_CALIBRATION_LABELS)
        or calibrated
    )
    labeled = {GuaranteeSide.POSITIVE: 0, GuaranteeSide.NEGATIVE: 0}
    left = 0
    with frozen_heap(), ctx.store.session() as session:
        chunks = engine_for(ctx.config.model).score(head, embeddings, ledger.iter_pool(session, ref.category_id))
        while True:
            with ctx.stages.timed("score", ref.number):
                scored = next(chunks, None)
                if scored is None:
                    break
                chunk, scores = scored
                decisions = decide(scores, positive.threshold, negative.threshold)
                positive_probability = _probability(scores, calibrated)
            with ctx.stages.timed("store writes", ref.number):
                ledger.record_labels(
                    session,
                    ref.category_id,
                    (
                        ledger.NewLabel(item, int(decision), float(p if decision == 1 else 1 - p))
                        for (item, _), p, decision in zip(chunk, positive_probability, decisions, strict=True)
                        if decision >= 0
                    ),
                    source=LabelSource.MODEL,
                    origin=f"round:{ref.id}:model",
                    round_id=ref.id,
                    reason=f"round {ref.number} split",
                )
            labeled[GuaranteeSide.POSITIVE] += int((decisions == 1).sum())
            labeled[GuaranteeSide.NEGATIVE] += int((decisions == 0).sum())
            left += int((decisions < 0).sum())
        with ctx.stages.timed("store writes", ref.number):
            ledger.settle_pool(session, ref.category_id)  # the next round reads what this one left
        session.merge(
            RoundModel(
                round_id=ref.id,
                head=head.to_bytes(),
                platt_slope=consensus.slope if consensus else None,
                platt_intercept=consensus.intercept if consensus else None,
                base_rate=consensus.base_rate if consensus else None,
                calibration_size=consensus.size if consensus else int(left_behind.sum()),
            )
        )
        for test in (positive, negative):
            session.merge(_row(ref, test, labeled[test.side]))
        # The sample has calibrated its round; from now on it trains later rounds' models.
        session.execute(
            update(RoundItem)
            .where(RoundItem.round_id == ref.id, RoundItem.role == ItemRole.CALIBRATION)
            .values(active=False)
        )
        state = set_state(
            session,
            ref,
            DONE,
            finished_at=utc_now(),
            high_threshold=positive.threshold,
            low_threshold=negative.threshold,
            notes=f"calibration {calibration.size}; {positive.describe()}; {negative.describe()}",
        )
    ctx.progress.message(
        f"{ref.category}: round {ref.number}: model labeled {labeled[GuaranteeSide.POSITIVE]} positive, "
        f"{labeled[GuaranteeSide.NEGATIVE]} negative; {left} left (calibration {calibration.size}, "
        f"{calibration.unresolved} unresolved; {positive.describe()}; {negative.describe()})"
    )
    return state


def _consensus_at_the_cap(
    ctx: Context, session: Session, ref: RoundRef, rows: Sequence[tuple[int, str, int]]
) -> NDArray[np.int8]:
    """People's label for each calibration image: its human label, or for an image that reached
    its vote cap below the label bar, the consensus of its votes if that is at least
    ``cascade.calibration_consensus`` sure; :data:`UNRESOLVED` otherwise."""
    labels = np.array([label for _, _, label in rows], dtype=np.int8)
    if not (labels == UNRESOLVED).any():
        return labels
    posterior = human_posterior(session, ref.category_id, ctx.config.quality)
    if posterior is None:
        return labels
    position = {item: index for index, item in enumerate(posterior.items)}
    winners, certainty = posterior.labels(), posterior.confidence()
    bar = ctx.config.cascade.calibration_consensus
    for row, (item, _, label) in enumerate(rows):
        index = position.get(item)
        if label == UNRESOLVED and index is not None and certainty[index] >= bar:
            labels[row] = int(winners[index])
    return labels


def _probability(scores: NDArray[np.float64], platt: PlattScaling | None) -> NDArray[np.float64]:
    if platt is None:
        return probability(scores)
    return np.asarray(expit(platt.slope * scores + platt.intercept), dtype=np.float64)


def _row(ref: RoundRef, test: SideTest, labeled: int) -> RoundTest:
    return RoundTest(
        round_id=ref.id,
        side=test.side,
        mode="ltt",
        threshold=test.threshold,
        target=test.target,
        delta=test.delta,
        recall_slack=test.recall_slack,
        calibration_size=test.calibration_size,
        unresolved=test.unresolved,
        tested=test.tested,
        errors=test.errors,
        p_value=test.p_value,
        bound=test.bound,
        labeled=labeled,
    )
