"""Planning a round before anyone labels it: its error budget, and how many images it needs.

Both are decided from what earlier rounds left, never from the round's own labels, so the split's
guarantee is untouched by them. The budget: each side of the guarantee has half of
``1 - confidence`` over all rounds, and a round spends a share of what is left
(:func:`lsun_crowd.guarantee.round_budget`); the recall slack is spent the same way by rounds
that discard positives, at a larger share (:data:`lsun_crowd.guarantee.RECALL_SHARE`).

The sample: a round's calibration must be large enough for each side's test to pass on the pool
it splits. After the first round the pool's positive share is known from the previous round's
calibration images its split left behind (a uniform sample of today's pool), so a round asks
people for what its tests need (with a margin) and no more: a rare category's first round is
large, the rounds on the enriched remainder much smaller. ``sample_per_round`` stays the most a
round sends, and the first round's size. Rounds are sized so with ``cascade.planned_samples``;
without it every round sends ``sample_per_round``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lsun_crowd.config import CascadeConfig
from lsun_crowd.guarantee import RECALL_SHARE, fewest_to_pass, min_tested, round_budget
from lsun_crowd.schema import Gold, GuaranteeSide, LabelCount, LabelSource, Round, RoundModel, RoundTest

MARGIN = 1.3  # calibration asked for, over what each test needs with one error


@dataclass(frozen=True)
class Budget:
    positive: float  # the positive side's error budget this round
    negative: float
    recall_slack: float  # the share of the positives this round's negative side may discard


def budget_left(session: Session, category_id: int, number: int, cascade: CascadeConfig) -> Budget:
    """Round ``number``'s error budget on each side and its recall slack: a share of what the
    category's earlier rounds left."""
    earlier = (
        select(RoundTest.side, func.sum(RoundTest.delta))
        .join(Round, Round.id == RoundTest.round_id)
        .where(Round.category_id == category_id, Round.number < number)
        .group_by(RoundTest.side)
    )
    spent = {side: float(delta or 0) for side, delta in session.execute(earlier)}
    slack_used = session.scalar(
        select(func.sum(RoundTest.recall_slack))
        .join(Round, Round.id == RoundTest.round_id)
        .where(
            Round.category_id == category_id,
            Round.number < number,
            RoundTest.side == GuaranteeSide.NEGATIVE,
            RoundTest.threshold.is_not(None),
        )
    )
    per_side = (1 - cascade.confidence) / 2
    recall = (
        round_budget(1 - cascade.target_recall, float(slack_used or 0), RECALL_SHARE)
        if cascade.target_recall > 0
        else 0.0
    )
    return Budget(
        round_budget(per_side, spent.get(GuaranteeSide.POSITIVE, 0.0)),
        round_budget(per_side, spent.get(GuaranteeSide.NEGATIVE, 0.0)),
        recall,
    )


def pool_base_rate(session: Session, category_id: int, number: int) -> float | None:
    """The positive share of the pool round ``number`` draws from, as the previous round's
    calibration images left behind by its split showed it; ``None`` before any split."""
    found = session.scalar(
        select(RoundModel.base_rate)
        .join(Round, Round.id == RoundModel.round_id)
        .where(Round.category_id == category_id, Round.number == number - 1)
    )
    return None if found is None else float(found)


def known_positives_before(session: Session, category_id: int, target_precision: float, own: int) -> float:
    """Positives the category is known to have, before the round's calibration labels: people's
    positive labels (less ``own``, the round's calibration positives), gold positives, and the
    model's positives counted at the precision they were certified at."""
    counts = dict(
        session.execute(
            select(LabelCount.source, LabelCount.count).where(
                LabelCount.category_id == category_id, LabelCount.label == 1
            )
        ).all()
    )
    gold = session.scalar(select(func.count()).where(Gold.category_id == category_id, Gold.answer == 1)) or 0
    human = counts.get(LabelSource.HUMAN, 0) - own
    return max(0.0, human + gold + target_precision * counts.get(LabelSource.MODEL, 0))


def discard_limit(recall_slack: float, known_positives: float, pool: int, base_rate: float) -> float | None:
    """The share of the pool a round's negative side may discard as positives, when testing
    recall that way is the stronger test (see :func:`lsun_crowd.guarantee.certify_negative`):
    the positives already known outnumber those the pool is expected to hold. ``None``: test
    recall against the calibration's own positives."""
    if recall_slack <= 0 or pool <= 0 or known_positives <= base_rate * pool:
        return None
    return recall_slack * known_positives / pool


def calibration_needed(
    cascade: CascadeConfig, budget: Budget, base_rate: float, discard: float | None = None
) -> dict[str, float]:
    """Calibration images each test needs to pass with one error, at this base rate (and with
    recall tested against ``discard``, a share of the pool, where :func:`discard_limit` set one)."""
    rate = min(max(base_rate, 1e-4), 1 - 1e-4)
    needs = {
        "precision": fewest_to_pass(cascade.target_precision, budget.positive, 1) / rate,
        "npv": fewest_to_pass(cascade.target_npv, budget.negative, 1) / (1 - rate),
    }
    if budget.recall_slack > 0 and discard is not None:
        needs["recall"] = min_tested(1 - min(discard, 0.5), budget.negative) + 1.0
    elif budget.recall_slack > 0:
        needs["recall"] = (min_tested(1 - budget.recall_slack, budget.negative) + 1) / rate
    return needs


def sample_size(
    cascade: CascadeConfig, budget: Budget, base_rate: float | None, pool: int, discard: float | None = None
) -> int:
    """Images round's people label: what its calibration needs (the sides that can be met within
    ``sample_per_round``), or ``sample_per_round`` when nothing is known yet; never more than
    half the pool, the other half being what the model is there to label."""
    largest = min(cascade.sample_per_round, pool // 2)
    if base_rate is None:
        return largest
    fits = [
        need * MARGIN / cascade.calibration_fraction
        for need in calibration_needed(cascade, budget, base_rate, discard).values()
        if need * MARGIN / cascade.calibration_fraction <= cascade.sample_per_round
    ]
    if not fits:
        return largest
    return min(largest, max(math.ceil(max(fits)), 10))
