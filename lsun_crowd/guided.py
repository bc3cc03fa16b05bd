"""Guided draws: where a category's rarer class is too rare for a round's uniform draw to find it,
part of the round's sample (``cascade.guided_share``, half by default) is the pool's likeliest
images of that class.

On 20,000 digit scans with a digit at 1%, uniform draws of 400 images found about 4 of its
positives a round; the 20 a model needs to split the pool (``cascade.min_class_labels``) took 9
rounds, and 80% of the pool stayed unlabeled at the round limit. A head fitted on the labels so
far (people's and gold) ranks the pool, and people label its likeliest images of the rarer class,
the *candidates* (role ``candidate`` in ``round_items``). The rest of the sample is drawn uniformly
from the pool without them, so it stays a uniform sample of what the split will label:
:func:`lsun_crowd.autolabel.drawn_from_the_pool_now` and :func:`lsun_crowd.autolabel.draw_weights`
never count a candidate as a draw, and the model's calibration and its error rates come from the
uniform draws alone. Candidates train the model, and their positives count towards the category's
known positives, the denominator of its certified recall. Certification draws its own uniform
samples of the model's final labels, so how the candidates were chosen never touches the
guarantee.

A round is guided when no split of the category has labeled anything yet, and the latest round's
uniform draw, at its rate of the rarer class (Beta(1, 1) prior), would find fewer than
``min_class_labels`` of it in the round's draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lsun_crowd import ledger
from lsun_crowd.autolabel import training_set
from lsun_crowd.classifier import train_head
from lsun_crowd.context import Context
from lsun_crowd.engine import engine_for
from lsun_crowd.schema import ItemRole, Label, LabelSource, Round, RoundItem, RoundKind


@dataclass(frozen=True)
class Guided:
    rarer: int  # the class the candidates are the likeliest of (1: positive)
    expected: float  # of that class, in a uniform draw of the round's size


def rarer_class(session: Session, category_id: int, number: int, size: int, needed: int) -> Guided | None:
    """Whether round ``number`` (``size`` images) of the category is guided, and towards which
    class: from the labels people gave the latest split round's uniform draw."""
    latest = session.scalar(
        select(Round.id)
        .where(Round.category_id == category_id, Round.kind == RoundKind.SPLIT, Round.number < number)
        .order_by(Round.number.desc())
        .limit(1)
    )
    if latest is None:
        return None
    # Once a split has labeled anything, the model finds the class: a pool the splits left small
    # holds few of it because it is small, and candidates there only delay the next split (on
    # `lsun-crowd simulate --items 20000 --seed 1`, 0.46 votes per resolved image against 0.33).
    split = session.scalar(
        select(Round.id)
        .where(
            Round.category_id == category_id,
            Round.kind == RoundKind.SPLIT,
            Round.high_threshold.is_not(None) | Round.low_threshold.is_not(None),
        )
        .limit(1)
    )
    if split is not None:
        return None
    counts = dict(
        session.execute(
            select(Label.label, func.count())
            .select_from(RoundItem)
            .join(Label, (Label.item_id == RoundItem.item_id) & (Label.category_id == category_id))
            .where(RoundItem.round_id == latest, RoundItem.role == ItemRole.TRAIN, Label.source == LabelSource.HUMAN)
            .group_by(Label.label)
        ).all()
    )
    positives, negatives = int(counts.get(1, 0)), int(counts.get(0, 0))
    rarer = 1 if positives <= negatives else 0
    share = (min(positives, negatives) + 1) / (positives + negatives + 2)
    expected = share * size
    return Guided(rarer, expected) if expected < needed else None


def candidates(
    ctx: Context, session: Session, category_id: int, seed: int, count: int, rarer: int
) -> NDArray[np.int64]:
    """The sorted pool positions (``ledger.iter_pool``'s order) of the ``count`` images a head
    fitted on the category's labels so far scores likeliest to be of class ``rarer``; none where
    those labels lack a class. Memory grows with ``count``, not the pool."""
    training, gold = training_set(session, category_id)
    shas = [sha for sha, _, _, _ in training] + [sha for sha, _ in gold]
    targets = np.array([label for _, label, _, _ in training] + [answer for _, answer in gold], dtype=np.float64)
    if count <= 0 or targets.sum() == 0 or targets.sum() == len(targets):
        return np.zeros(0, dtype=np.int64)
    # Every label weighs the same, as gold does: a ranking needs only the classes.
    weights = np.ones(len(targets))
    embeddings = ctx.embeddings()
    head = train_head(embeddings.get(shas), targets, weights, ctx.config.model, seed=seed)
    sign = 1.0 if rarer == 1 else -1.0
    scores = np.zeros(0)
    positions = np.zeros(0, dtype=np.int64)
    offset = 0
    for chunk, logits in engine_for(ctx.config.model).score(head, embeddings, ledger.iter_pool(session, category_id)):
        scores = np.concatenate([scores, sign * logits])
        positions = np.concatenate([positions, np.arange(offset, offset + len(chunk))])
        offset += len(chunk)
        if len(scores) > count:
            kept = np.argpartition(-scores, count)[:count]
            scores, positions = scores[kept], positions[kept]
    return np.sort(positions)


def uniform_besides(
    generator: np.random.Generator, pool: int, taken: NDArray[np.int64], size: int
) -> NDArray[np.int64]:
    """``size`` pool positions drawn uniformly without replacement from the ``pool`` positions but
    the sorted ``taken`` ones; memory grows with ``size`` and ``taken``."""
    drawn = np.sort(generator.choice(pool - len(taken), size=size, replace=False))
    # The j-th free position is j plus the taken positions at or before it.
    shifted = taken - np.arange(len(taken))
    return drawn + np.searchsorted(shifted, drawn, side="right")
