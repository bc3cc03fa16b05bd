"""Training the round's model on every human label so far and letting it label the pool.

The pool is streamed: scored from the memory-mapped embedding cache and labeled in chunks of
:data:`lsun_crowd.ledger.CHUNK` images inside the round's one closing transaction, so memory stays
bounded whatever the pool's size, and a crash leaves either all of the split or none of it.

Thresholds come from the active calibration images: human-labeled, never trained on, and each one
still exchangeable with the pool because every split since its round would have left it
unlabeled. Those a split would have decided retire from calibration with the pool's images.
"""

from __future__ import annotations

import math

import numpy as np
from sqlalchemy import select, update

from lsun_crowd import ledger
from lsun_crowd.classifier import probability, train_head
from lsun_crowd.consensus import MIN_CALIBRATION_LABELS, fit_platt
from lsun_crowd.context import DONE, Context, RoundRef, set_state
from lsun_crowd.schema import Gold, Item, ItemRole, Label, LabelSource, Round, RoundItem, RoundModel, utc_now
from lsun_crowd.split import choose_thresholds


def train_and_split(ctx: Context, ref: RoundRef) -> str:
    cascade = ctx.config.cascade
    if ref.round.human_only:
        with ctx.store.session() as session:
            return set_state(session, ref, DONE, finished_at=utc_now())
    with ctx.store.session() as session:
        calibration_role = (
            select(RoundItem.item_id)
            .join(Round, Round.id == RoundItem.round_id)
            .where(Round.category_id == ref.category_id, RoundItem.role == ItemRole.CALIBRATION)
        )
        training: list[tuple[str, int, float]] = [
            (sha, label, confidence)
            for sha, label, confidence in session.execute(
                select(Item.sha256, Label.label, Label.confidence)
                .join(Label, Label.item_id == Item.id)
                .where(
                    Label.category_id == ref.category_id,
                    Label.source == LabelSource.HUMAN,
                    Item.id.notin_(calibration_role),
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
        calibration = session.execute(
            select(RoundItem.round_id, RoundItem.item_id, Item.sha256, Label.label)
            .join(Round, Round.id == RoundItem.round_id)
            .join(Item, Item.id == RoundItem.item_id)
            .join(Label, (Label.item_id == RoundItem.item_id) & (Label.category_id == ref.category_id))
            .where(
                Round.category_id == ref.category_id,
                RoundItem.role == ItemRole.CALIBRATION,
                RoundItem.active,
                Label.source == LabelSource.HUMAN,
            )
            .order_by(RoundItem.item_id)
        ).all()
    targets = np.array([label for _, label, _ in training], dtype=np.float64)
    embeddings = ctx.embeddings()
    if len(set(targets.tolist())) < 2 or not calibration:
        note = "no split: training needs both classes and calibration needs labels"
        ctx.progress.message(f"{ref.category}: round {ref.number}: {note}")
        with ctx.store.session() as session:
            return set_state(session, ref, DONE, notes=note, finished_at=utc_now())
    head = train_head(
        embeddings.get([sha for sha, _, _ in training]),
        targets,
        np.array([confidence for _, _, confidence in training], dtype=np.float64),
        ctx.config.model,
        seed=ctx.config.project.seed * 1_000_003 + ref.category_id * 101 + ref.number,
    )
    calibration_scores = head.logits(embeddings.get([sha for _, _, sha, _ in calibration]))
    calibration_labels = np.array([label for _, _, _, label in calibration])
    thresholds = choose_thresholds(
        calibration_scores,
        calibration_labels,
        cascade.target_precision,
        cascade.target_npv,
        cascade.confidence,
    )
    retired = thresholds.decide(calibration_scores) >= 0
    # Calibrated on the labels that stay active, which are a random sample of the pool left behind,
    # so its probabilities hold for the images the next round samples from that pool.
    platt = fit_platt(calibration_scores[~retired], calibration_labels[~retired], MIN_CALIBRATION_LABELS)
    positives = negatives = left = 0
    with ctx.store.session() as session:
        for chunk in ledger.iter_pool(session, ref.category_id):
            scores = head.logits(embeddings.get([sha for _, sha in chunk]))
            decisions = thresholds.decide(scores)
            positive_probability = probability(scores)
            decided = decisions >= 0
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
            positives += int((decisions == 1).sum())
            negatives += int((decisions == 0).sum())
            left += int((~decided).sum())
        session.merge(
            RoundModel(
                round_id=ref.id,
                head=head.to_bytes(),
                platt_slope=platt.slope if platt else None,
                platt_intercept=platt.intercept if platt else None,
                base_rate=platt.base_rate if platt else None,
                calibration_size=int((~retired).sum()),
            )
        )
        for (round_id, item_id, _, _), gone in zip(calibration, retired, strict=True):
            if gone:
                session.execute(
                    update(RoundItem)
                    .where(RoundItem.round_id == round_id, RoundItem.item_id == item_id)
                    .values(active=False)
                )
        state = set_state(
            session,
            ref,
            DONE,
            finished_at=utc_now(),
            high_threshold=_finite(thresholds.high),
            low_threshold=_finite(thresholds.low),
            notes=(
                f"calibration {thresholds.calibration_size}, precision bound {thresholds.precision_bound:.3f}, "
                f"NPV bound {thresholds.npv_bound:.3f}"
            ),
        )
    ctx.progress.message(
        f"{ref.category}: round {ref.number}: model labeled {positives} positive, {negatives} negative; "
        f"{left} left (logit thresholds {thresholds.low:.2f}/{thresholds.high:.2f}, "
        f"calibration {thresholds.calibration_size})"
    )
    return state


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
