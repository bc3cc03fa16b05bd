"""Training the round's model on every human label so far and letting it label the pool.

The round's head trains on every human label of the category and every gold answer, stopped early
on held-out labels: each of :data:`FOLDS` cross-fitted heads stops on its own held-out fold and
scores it, and the head that labels trains on everything for the median of their epochs. Its
Platt scaling is fitted on those out-of-fold scores, which no head trained on.

The pool is streamed twice from the memory-mapped embedding cache, in chunks of
:data:`lsun_crowd.ledger.CHUNK` images: once into a histogram of scores, from which
:mod:`lsun_crowd.thresholds` picks the round's thresholds by point estimates, and once to label,
inside the round's one closing transaction, so memory stays bounded whatever the pool's size and a
crash leaves either all of the split or none of it. The labels are provisional until the
category's certification (:mod:`lsun_crowd.certify`) tests them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from lsun_crowd import certify, ledger
from lsun_crowd.classifier import Head, cross_fit_heads, train_head
from lsun_crowd.config import ModelConfig
from lsun_crowd.consensus import MIN_CALIBRATION_LABELS, PlattScaling, fit_platt
from lsun_crowd.context import DONE, Context, RoundRef, Stream, model_seed, set_state
from lsun_crowd.crossfit import stratified_folds
from lsun_crowd.embed import pick_device
from lsun_crowd.engine import PoolChunk, engine_for
from lsun_crowd.heap import frozen_heap
from lsun_crowd.ids import round_origin
from lsun_crowd.schema import (
    Gold,
    Item,
    ItemRole,
    Label,
    LabelSource,
    Round,
    RoundItem,
    RoundKind,
    RoundModel,
    utc_now,
)
from lsun_crowd.thresholds import (
    BINS,
    PLAN_RECALL_SHARE,
    Calibrated,
    Chosen,
    Goals,
    ScoreHistogram,
    choose,
    decide,
    fit_calibration,
    logit_edges,
)

FOLDS = 5
SURE = 0.001  # a calibrated probability this close to 0 or 1 is the model being sure
MIN_CLASS_TO_CALIBRATE = 30  # labels of each class the round's own sample needs to calibrate on alone


@dataclass(frozen=True)
class RoundHead:
    """The head that labels, and its calibration from out-of-fold scores (``None``: too few labels)."""

    head: Head
    platt: PlattScaling | None  # the model as an annotator (lsun_crowd.consensus)
    calibrated: Calibrated | None = None  # the probability of positive its thresholds and labels use
    disagreement: tuple[float, float] | None = None  # see RoundModel.disagreement: (negatives, positives)
    scores: NDArray[np.float64] | None = None  # out-of-fold logits of people's labels
    labels: NDArray[np.int64] | None = None  # and those labels
    fresh: NDArray[np.bool_] | None = None  # which of them were drawn from the pool as it is now
    drawn: NDArray[np.float64] | None = None  # each one's weight as a draw from it (None: equal)


# People's labels a region must hold for the rate they show there to be used.
MIN_REGION_LABELS = 30


def region_rate(fitted: RoundHead, label: int, threshold: float) -> float:
    """How often people contradict the model beyond ``threshold`` on side ``label``: the share of
    the labels of images the pool as it is now would hold (:attr:`RoundHead.fresh`) whose
    out-of-fold score is there, where they are at least :data:`MIN_REGION_LABELS` (0 below: the
    calibrated curve and the rate where the model was sure stand). The error a certification of
    those labels will meet, the model's own and people's slips together. The calibrated curve alone
    is too sure in its tails: on 20,000 digit scans it expected 11.9 positives among a first round's
    9,743 auto-negatives, which held about 26, and 0.08% among a third round's, which held 1%.
    Labels of images an earlier split took are left out: they are mostly the easy ones.

    Jeffreys' posterior mean, ``(k + 1/2) / (n + 1)``, was tried in place of ``k / n``: it left a
    region few labels reach priced as unclean, and cost ``lsun-crowd simulate --items 20000`` 0.50,
    0.49 and 0.84 votes per resolved image on seeds 1 to 3 (0.33, 0.47 and 0.46 with ``k / n``),
    while the digit scans' first rounds split negatives holding 0.27% positives either way."""
    if fitted.scores is None or fitted.labels is None:
        return 0.0
    fresh = fitted.fresh if fitted.fresh is not None else np.ones(len(fitted.scores), dtype=bool)
    region = fresh & ((fitted.scores >= threshold) if label == 1 else (fitted.scores <= threshold))
    if int(region.sum()) < MIN_REGION_LABELS:
        return 0.0
    weight = fitted.drawn[region] if fitted.drawn is not None else np.ones(int(region.sum()))
    return float(weight[fitted.labels[region] != label].sum() / weight.sum())


# People's labels of the other class that the rate of the model's misses needs to be used.
MIN_MISS_LABELS = 20


def miss_rate(fitted: RoundHead, label: int, threshold: float, others: float, size: float) -> float:
    """The share of the ``size`` labels side ``label`` gives beyond ``threshold`` expected wrong,
    from the other class's side of it: how often people's labels of the other class (of images the
    pool as it is now would hold, each counted once) score beyond ``threshold`` out of fold,
    times that class's expected count among the images split (``others``). Where the other class is
    rare its images seldom fall in the side's region, so :func:`region_rate` sees none; this counts
    them from all of its labels (0 below :data:`MIN_MISS_LABELS`). On 20,000 digit scans at 1%, the
    final split's 15,785 auto-negatives held 14 positives where the calibrated curve expected 2.1,
    and certifying them was planned at about 7,000 checks; people checked 10,153 and it failed."""
    if fitted.scores is None or fitted.labels is None or size <= 0:
        return 0.0
    fresh = fitted.fresh if fitted.fresh is not None else np.ones(len(fitted.scores), dtype=bool)
    other = fresh & (fitted.labels != label)
    if int(other.sum()) < MIN_MISS_LABELS:
        return 0.0
    beyond = (fitted.scores >= threshold) if label == 1 else (fitted.scores <= threshold)
    # Unweighted (:func:`draw_weights` aside): the later rounds' hard images count as much as the
    # first round's, which makes the share err high, where a wasted certification costs most.
    share = int((other & beyond).sum()) / int(other.sum())
    return min(1.0, share * others / size)


STEP = 0.9  # each candidate side a split weighs is this share of the previous one
SMALLEST = 0.05  # down to this share of the loosest side the point estimates allow


def economical(
    chosen: Chosen, histogram: ScoreHistogram, fitted: RoundHead, costs: dict[int, certify.SideCost]
) -> tuple[Chosen, tuple[float, float]]:
    """Each side of ``chosen`` cut back to where it saves people the most labels: its size less
    the checks its certification will add (:func:`lsun_crowd.certify.side_costs`). Certifying a set
    near its target takes checking most of it (12,000 auto-negatives against NPV 0.995: about 1,400
    checks at 5 expected positives, 6,300 at 20), so the loosest side the estimates allow is seldom
    the cheapest. A side's expected errors are the most of the calibrated curve's, the rate where
    the model was sure, :func:`region_rate`'s and :func:`miss_rate`'s, the least of it over the
    side and every looser one weighed (a stricter cut holds fewer errors, not more, though fewer
    labels measure it).
    Returns the sides and the error rate expected of each (negatives, positives): what its
    certification will meet, the model's own errors and people's slips together."""
    assert fitted.calibrated is not None
    edges = logit_edges()
    counts = histogram.counts.astype(np.float64)
    p = fitted.calibrated.probability((edges[:-1] + edges[1:]) / 2)
    rates = list(fitted.disagreement or (0.0, 0.0))
    others = {0: float((counts * p).sum()), 1: float((counts * (1 - p)).sum())}  # the other class's images

    def cut(label: int, sizes: NDArray[np.float64], wrong: NDArray[np.float64], indices: range) -> tuple[int, float]:
        """The side's cut point and its size; ``sizes[i]``, ``wrong[i]``: the side's labels and
        their calibrated expected errors when cut at bin edge ``i``."""

        def rate(at: int) -> float:
            calibrated = float(wrong[at] / max(sizes[at], 1.0))
            threshold = float(edges[at])
            missed = miss_rate(fitted, label, threshold, others[label], float(sizes[at]))
            return max(calibrated, region_rate(fitted, label, threshold), missed)

        index, rates[label] = _cheapest(indices, sizes, rate, costs[label], rates[label])
        return index, float(sizes[index])

    if chosen.low is not None:
        below = np.concatenate([[0.0], np.cumsum(counts)])
        below_positive = np.concatenate([[0.0], np.cumsum(counts * p)])
        index, size = cut(0, below, below_positive, range(int(np.searchsorted(edges, chosen.low)), 0, -1))
        chosen = replace(
            chosen,
            low=float(edges[index]) if size > 0 else None,
            negatives=int(size),
            expected_npv=float(1 - below_positive[index] / size) if size > 0 else None,
            expected_lost=float(below_positive[index]),
        )
    if chosen.high is not None:
        above = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])
        above_wrong = np.concatenate([np.cumsum((counts * (1 - p))[::-1])[::-1], [0.0]])
        index, size = cut(1, above, above_wrong, range(int(np.searchsorted(edges, chosen.high)), BINS))
        chosen = replace(
            chosen,
            high=float(edges[index]) if size > 0 else None,
            positives=int(size),
            expected_precision=float(1 - above_wrong[index] / size) if size > 0 else None,
        )
    return chosen, (rates[0], rates[1])


def _cheapest(
    indices: range,
    sizes: NDArray[np.float64],
    rate: Callable[[int], float],
    cost: certify.SideCost,
    floor: float,
) -> tuple[int, float]:
    """Of the cut points ``indices`` (loosest first), the one whose side saves the most labels,
    weighed at sizes :data:`STEP` apart; with the error rate expected there. ``sizes[i]``: the
    side's size cut at ``i``; ``rate(i)``: its estimated error rate, read only where weighed."""
    best, best_saved, best_rate = indices[0], -math.inf, floor
    wanted = measured = math.inf
    smallest = SMALLEST * sizes[indices[0]]
    for index in indices:
        size = float(sizes[index])
        if size > wanted:
            continue
        if size < smallest or size <= 0:
            break
        measured = min(measured, rate(index))
        expected = max(floor, measured)
        saved = size - cost(int(size), expected * size)
        if saved > best_saved:
            best, best_saved, best_rate = index, saved, expected
        wanted = size * STEP
    return best, best_rate


def fit_round_head(
    features: NDArray[np.float32],
    targets: NDArray[np.float64],
    weights: NDArray[np.float64],
    gold: tuple[NDArray[np.float32], NDArray[np.float64]],
    config: ModelConfig,
    seed: int,
    calibrate_on: NDArray[np.bool_] | None = None,
    drawn: NDArray[np.float64] | None = None,
    fallback: NDArray[np.float64] | None = None,
) -> RoundHead:
    """Cross-fitted heads for out-of-fold scores and the epochs to train for, then the head on
    every label. Gold answers always train and are never scored. The calibration is fitted on the
    out-of-fold scores of ``calibrate_on`` (the labels drawn from the pool as the head will split
    it: uniform draws from it), or of every label where those hold too few of a class. ``drawn``:
    each label's weight as a draw from that pool (:func:`draw_weights`; ``None``: equal), which
    the calibration and the rates of contradiction are weighted by. ``fallback``: each label's
    weight where ``calibrate_on`` holds too few of a class and every label calibrates (``None``:
    equal)."""
    labels = (targets >= 0.5).astype(np.int64)
    folds = min(FOLDS, int(labels.sum()), int((1 - labels).sum()))

    def final(epochs: int) -> Head:
        return train_head(
            np.concatenate([features, gold[0]]),
            np.concatenate([targets, gold[1]]),
            np.concatenate([weights, np.ones(len(gold[1]))]),
            config,
            seed=seed,
            epochs=epochs,
        )

    if folds < 2:
        return RoundHead(final(config.epochs), None)
    fold_of = stratified_folds(labels, folds, [seed, Stream.SPLIT_FOLDS])
    scores, epochs = cross_fit_heads(features, targets, weights, fold_of, gold, config, seed)
    platt = fit_platt(scores, labels, MIN_CALIBRATION_LABELS)
    weight = drawn if drawn is not None else np.ones(len(labels))
    own = (calibrate_on if calibrate_on is not None else np.ones(len(labels), dtype=bool)) & (weight > 0)
    if min(int(labels[own].sum()), int((1 - labels[own]).sum())) < MIN_CLASS_TO_CALIBRATE:
        own, weight, drawn = np.ones(len(labels), dtype=bool), np.ones(len(labels)), None
        if fallback is not None:
            weight = drawn = fallback
    calibrated = fit_calibration(scores[own], labels[own], weight[own] if drawn is not None else None)
    # Where the model is sure, how often people said otherwise: mostly people's own slips, which a
    # certification of its labels will meet too.
    probability = calibrated.probability(scores)
    wrong = (probability > 0.5) != (labels == 1)
    rates = []
    for sure in (probability < SURE, probability > 1 - SURE):  # sure of a negative, of a positive
        total = float(weight[sure].sum())
        rates.append(float(weight[sure & wrong].sum()) / total if total > 0 else 0.0)
    disagreement = (rates[0], rates[1])
    fresh = calibrate_on if calibrate_on is not None else np.ones(len(labels), dtype=bool)
    return RoundHead(final(epochs), platt, calibrated, disagreement, scores, labels, fresh, drawn)


Training = list[tuple[str, int, float, int | None]]  # (sha256, label, confidence, round id) of people's labels
GoldAnswers = list[tuple[str, int]]


def training_set(session: Session, category_id: int) -> tuple[Training, GoldAnswers]:
    """Every human label of the category and every gold answer, in item order. A guided round's
    candidates (:mod:`lsun_crowd.guided`) are no draw: their labels have no round."""
    candidate = (
        (RoundItem.round_id == Label.round_id)
        & (RoundItem.item_id == Label.item_id)
        & (RoundItem.role == ItemRole.CANDIDATE)
    )
    training: Training = [
        (sha, label, confidence, None if guided is not None else round_id)
        for sha, label, confidence, round_id, guided in session.execute(
            select(Item.sha256, Label.label, Label.confidence, Label.round_id, RoundItem.item_id)
            .join(Label, Label.item_id == Item.id)
            .outerjoin(RoundItem, candidate)
            .where(Label.category_id == category_id, Label.source == LabelSource.HUMAN)
            .order_by(Item.id)
        )
    ]
    gold = [
        (sha, answer)
        for sha, answer in session.execute(
            select(Item.sha256, Gold.answer)
            .join(Gold, Gold.item_id == Item.id)
            .where(Gold.category_id == category_id)
            .order_by(Item.id)
        )
    ]
    return training, gold


def _fit(ctx: Context, ref: RoundRef, training: Training, gold: GoldAnswers, reopened: bool) -> RoundHead:
    """The round's head and calibration (:func:`fit_round_head`), calibrated on the labels drawn
    from the pool it splits (:func:`drawn_from_the_pool_now`)."""
    embeddings = ctx.embeddings()
    with ctx.stages.timed("train", ref.number):
        features = embeddings.get([sha for sha, _, _, _ in training])
        rounds = [round_id for _, _, _, round_id in training]
        with ctx.store.session() as session:
            fresh = drawn_from_the_pool_now(
                session, ref.category_id, ref.number, rounds, features, ctx.config.model.device, reopened
            )
            guided = guided_category(session, ref.category_id)
            weights = (
                draw_weights(session, ref.category_id, ref.number, rounds, features, ctx.config.model.device)
                if reopened or guided
                else None
            )
        drawn = weights * fresh if weights is not None and reopened else None
        # A guided category's uniform draws hold few of its rarer class, so every label calibrates:
        # each uniform draw weighed as the images it stands for, every other label as itself.
        # Unweighted, the candidates (a tenth of them positive, where the pool held 1%) priced the
        # rare digit's 17,865 auto-negatives at 14,790 checks.
        fallback = np.where(weights > 0, weights, 1.0) if weights is not None and guided else None
        return fit_round_head(
            features,
            np.array([label for _, label, _, _ in training], dtype=np.float64),
            np.array([confidence for _, _, confidence, _ in training], dtype=np.float64),
            (embeddings.get([sha for sha, _ in gold]), np.array([answer for _, answer in gold], dtype=np.float64)),
            ctx.config.model,
            seed=model_seed(ctx.config.project.seed, ref.category_id, ref.number),
            calibrate_on=fresh,
            drawn=drawn,
            fallback=fallback,
        )


@dataclass(frozen=True)
class Proposal:
    """A split as planned: its thresholds, the error rates it expects of each side, and what it says
    of the sides it leaves to people."""

    chosen: Chosen
    disagreement: tuple[float, float]
    dropped: str


def _propose(
    ctx: Context, ref: RoundRef, fitted: RoundHead, known: Known, chunks: Iterable[PoolChunk], replacing: bool
) -> Proposal:
    """Score ``chunks`` (the images to split) into a histogram, choose thresholds by point
    estimates, and cut each side back to where certifying it pays. ``replacing``: the category's
    labels not certified yet are to be replaced by this split (:func:`final_split`)."""
    cascade = ctx.config.cascade
    assert fitted.calibrated is not None
    histogram = ScoreHistogram()
    with ctx.stages.timed("score", ref.number):
        for _, scores in engine_for(ctx.config.model).score(fitted.head, ctx.embeddings(), chunks):
            histogram.add(scores)
    with ctx.stages.timed("split", ref.number):
        positives = known.positives + histogram.expected_positives(fitted.calibrated)
        lose = (
            PLAN_RECALL_SHARE * (1 - cascade.target_recall) * positives - known.lost
            if cascade.target_recall > 0
            else math.inf
        )
        goals = Goals(cascade.target_precision, cascade.target_npv, max(lose, 0.0))
        chosen = choose(histogram, fitted.calibrated, goals)
        with ctx.store.session() as session:
            costs = certify.side_costs(session, ref.category_id, ref.number, cascade, positives, replacing)
        chosen, disagreement = economical(chosen, histogram, fitted, costs)
        chosen, dropped = _worth_certifying(ctx, ref, chosen, disagreement, positives, replacing)
    return Proposal(chosen, disagreement, dropped)


def guided_category(session: Session, category_id: int) -> bool:
    """Whether any of the category's rounds was guided (:mod:`lsun_crowd.guided`)."""
    return (
        session.scalar(
            select(RoundItem.item_id)
            .join(Round, Round.id == RoundItem.round_id)
            .where(Round.category_id == category_id, RoundItem.role == ItemRole.CANDIDATE)
            .limit(1)
        )
        is not None
    )


def _candidates_found(session: Session, ref: RoundRef, rarer: int) -> tuple[int, int] | None:
    """Of a guided round's candidates (:mod:`lsun_crowd.guided`), those people labeled of class
    ``rarer``, and how many there were; ``None`` for a round that was not guided. While a round's
    likeliest images still hold as many of the rarer class as a model needs, the pool holds more
    to find, and a split waits (for the first half of the rounds): on 20,000 digit scans at 1%
    (seed 1), round 2's model (771 labels) split 18,883 auto-negatives that held about 30 of the
    220 positives, too many for a certified recall of 0.9."""
    rows = session.execute(
        select(Label.label, func.count())
        .select_from(RoundItem)
        .join(Label, (Label.item_id == RoundItem.item_id) & (Label.category_id == ref.category_id))
        .where(RoundItem.round_id == ref.id, RoundItem.role == ItemRole.CANDIDATE, Label.source == LabelSource.HUMAN)
        .group_by(Label.label)
    ).all()
    counts = {int(label): int(count) for label, count in rows}
    total = int(
        session.scalar(select(func.count()).where(RoundItem.round_id == ref.id, RoundItem.role == ItemRole.CANDIDATE))
        or 0
    )
    if total == 0:
        return None
    return counts.get(rarer, 0), total


def _done_without_split(ctx: Context, ref: RoundRef, note: str) -> str:
    ctx.progress.message(f"{ref.category}: round {ref.number}: {note}")
    with ctx.store.session() as session:
        return set_state(session, ref, DONE, notes=note, finished_at=utc_now())


def _why_no_split(ctx: Context, ref: RoundRef, targets: NDArray[np.float64]) -> str | None:
    """Why the round should not split, in words (``targets``: people's labels so far); ``None``
    where it should."""
    cascade = ctx.config.cascade
    with ctx.store.session() as session:
        # Even if the model labeled the whole pool with no error on either side, would certifying
        # it pay? On a small pool it would not: then no model is trained at all.
        # The pool holds about as many positives as people's labels show: twice that, at most.
        pool = ledger.pool_size(session, ref.category_id)
        share = (float(targets.sum()) + 1) / (len(targets) + 2)
        best = {1: (min(pool, math.ceil(2 * share * pool)), 0.0), 0: (pool, 0.0)}
        hopeless = certify.not_worth_certifying(session, ref.category_id, ref.number, cascade, best, (0.0, 0.0))
    if len(hopeless) == 2:
        return f"no split: the pool of {pool:,} is too small for certification to pay ({'; '.join(hopeless.values())})"
    # People's labels of each class a split needs (cascade.min_class_labels). A calibration fitted
    # on fewer is a guess: on 20,000 digit scans at 1%, a round-2 model trained and calibrated on 8
    # positives expected 0.5 positives among 18,874 auto-negatives; people found 24 in 7,237 of them.
    rarer = int(min(targets.sum(), len(targets) - targets.sum()))
    if rarer < cascade.min_class_labels:
        which = "positive" if targets.sum() <= len(targets) - targets.sum() else "negative"
        return (
            f"no split: people's labels hold {rarer} {which}(s); the model's calibration needs "
            f"{cascade.min_class_labels} of each class"
        )
    with ctx.store.session() as session:
        found = _candidates_found(session, ref, int(targets.sum() <= len(targets) - targets.sum()))
    if found is not None and found[0] >= cascade.min_class_labels and 2 * ref.number < cascade.max_rounds:
        return (
            f"no split: the pool's {found[1]} likeliest images held {found[0]} of the rarer class; "
            "the next round looks for more first"
        )
    return None


def train_and_split(ctx: Context, ref: RoundRef) -> str:
    """The round's split: a model trained on people's labels so far labels the pool where it is
    sure enough, to be certified later; or, where a split could not pay or is not due, none (and
    the round says why)."""
    if ref.round.human_only:
        with ctx.store.session() as session:
            return set_state(session, ref, DONE, finished_at=utc_now())
    with ctx.store.session() as session:
        training, gold = training_set(session, ref.category_id)
        known = _known(session, ref.category_id, len([1 for _, answer in gold if answer == 1]))
    targets = np.array([label for _, label, _, _ in training], dtype=np.float64)
    reason = _why_no_split(ctx, ref, targets)
    if reason is not None:
        return _done_without_split(ctx, ref, reason)
    fitted = _fit(ctx, ref, training, gold, reopened=False)
    if fitted.platt is None:
        return _done_without_split(
            ctx,
            ref,
            f"no split: fewer than {MIN_CALIBRATION_LABELS} human labels, or one class, to calibrate the model on",
        )
    with ctx.store.session() as session:
        proposal = _propose(ctx, ref, fitted, known, ledger.iter_pool(session, ref.category_id), replacing=False)
    with frozen_heap(), ctx.store.session() as session:
        labeled, left = _write_split(ctx, session, ref, fitted, proposal, "model", "split")
        state = set_state(
            session,
            ref,
            DONE,
            finished_at=utc_now(),
            high_threshold=proposal.chosen.high,
            low_threshold=proposal.chosen.low,
            notes=f"trained on {len(training)} human labels ({fitted.head.epochs} epochs); {proposal.chosen.describe()}"
            + proposal.dropped,
        )
    ctx.progress.message(
        f"{ref.category}: round {ref.number}: model labeled {labeled[1]} positive, {labeled[0]} negative, "
        f"to be certified; {left} left ({proposal.chosen.describe()}{proposal.dropped})"
    )
    return state


def _write_split(
    ctx: Context, session: Session, ref: RoundRef, fitted: RoundHead, proposal: Proposal, origin: str, what: str
) -> tuple[dict[int, int], int]:
    """Label the pool by ``proposal`` (origin ``round:<id>:<origin>``) and store the round's model
    with the error rates its split expects, in ``session``'s transaction. Returns the labels given
    per class, and the images left."""
    chosen = proposal.chosen
    assert fitted.calibrated is not None and fitted.platt is not None
    labeled = {1: 0, 0: 0}
    left = 0
    chunks = engine_for(ctx.config.model).score(
        fitted.head, ctx.embeddings(), ledger.iter_pool(session, ref.category_id)
    )
    while True:
        with ctx.stages.timed("score", ref.number):
            scored = next(chunks, None)
            if scored is None:
                break
            chunk, scores = scored
            decisions = decide(scores, chosen.high, chosen.low)
            positive_probability = fitted.calibrated.probability(scores)
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
                origin=round_origin(ref.id, origin),
                round_id=ref.id,
                reason=f"round {ref.number} {what}, to be certified",
            )
        labeled[1] += int((decisions == 1).sum())
        labeled[0] += int((decisions == 0).sum())
        left += int((decisions < 0).sum())
    with ctx.stages.timed("store writes", ref.number):
        ledger.settle_pool(session, ref.category_id)  # the next round reads what this one left
    disagreement = proposal.disagreement
    session.merge(
        RoundModel(
            round_id=ref.id,
            head=fitted.head.to_bytes(),
            platt_slope=fitted.platt.slope,
            platt_intercept=fitted.platt.intercept,
            base_rate=fitted.platt.base_rate,
            calibration_size=fitted.platt.size,
            disagreement=disagreement[0],
            disagreement_positive=disagreement[1],
        )
    )
    return labeled, left


# A final split replaces the rounds' labels only where it pays with this many times the errors it
# expects: on 20,000 digit scans at 1%, a plan to certify 15,785 auto-negatives with 2.1 expected
# positives (which held 14) needed 46% of them checked; people checked 6,228 and it failed.
ROBUST = 2.0


def _replace_split(
    ctx: Context, ref: RoundRef, rounds: list[int], fitted: RoundHead, proposal: Proposal, verdict: str
) -> tuple[dict[int, int], int]:
    """In one transaction: the model labels of ``rounds`` withdrawn, the final split's written in
    their place, and the round's thresholds and notes (``verdict``) updated. Returns the labels
    written (by label) and the images left in the pool."""
    with frozen_heap(), ctx.store.session() as session:
        ledger.withdraw_labels(
            session,
            ref.category_id,
            (Label.source == LabelSource.MODEL) & Label.round_id.in_(rounds),
            origin=round_origin(ref.id, "reopen"),
            reason=f"round {ref.number}: split again, whole, by the model fitted on every label",
        )
        labeled, left = _write_split(ctx, session, ref, fitted, proposal, "final", "final split")
        session.execute(
            update(Round)
            .where(Round.id == ref.id)
            .values(
                high_threshold=proposal.chosen.high,
                low_threshold=proposal.chosen.low,
                notes=func.coalesce(Round.notes, "") + f"; {verdict}",
            )
        )
    return labeled, left


def final_split(ctx: Context, ref: RoundRef) -> bool:
    """When a category's rounds are over (``ref``: its latest round), before its certification:
    where its model labels not certified yet come from earlier rounds too, the latest round's model
    is fitted again, on every label, with the whole of them back in the pool it splits; and where
    that split is expected to keep more labels net of the checks certifying them needs
    (:func:`lsun_crowd.certify.net_labels`, at :data:`ROBUST` times the errors it expects), it
    replaces them, in one transaction (origin ``round:<id>:final``). A certification then tests
    one set, labeled by the best model, in one order. Kept as each round gave them, the labels
    carry the first rounds' weak models' errors: on 20,000 digit scans, round 1's model (375
    labels) left about 0.27% positives among its 8,765 auto-negatives, where the final split's
    13,426 held 0.045%. Where the latest model is no better (two rounds of a 6,000-image pool, the
    second trained on 38 labels more), the labels stay. Deterministic from the store, so a run
    killed here decides the same again. Returns whether it replaced them."""
    cascade = ctx.config.cascade
    round_ = ref.round
    with ctx.store.session() as session:
        rounds = certify.covered_rounds(session, ref.category_id, ref.number + 1)
        if round_.kind != RoundKind.SPLIT or not rounds or rounds[-1] != ref.id:
            return False
        # A latest round that went to people alone (or could not split) fits a model all the
        # same: on 20,000 digit scans (seed 1), digit 3's last round took the last 37 images, and
        # round 1's 13,697 auto-negatives, never split again, failed their certification.
        if not _labels_of(session, ref.category_id, rounds[:-1]):
            return False
        training, gold = training_set(session, ref.category_id)
        known = _known(session, ref.category_id, len([1 for _, answer in gold if answer == 1]), rounds)
    fitted = _fit(ctx, ref, training, gold, reopened=True)
    if fitted.platt is None or fitted.calibrated is None:
        return False
    with ctx.store.session() as session:
        chunks = itertools.chain(
            ledger.iter_pool(session, ref.category_id), _provisional(session, ref.category_id, rounds)
        )
        proposal = _propose(ctx, ref, fitted, known, chunks, replacing=True)
        chosen = proposal.chosen
        new = _sides_of(chosen, ROBUST)
        rates = (ROBUST * proposal.disagreement[0], ROBUST * proposal.disagreement[1])
        now = certify.net_labels(session, ref.category_id, ref.number, cascade, None, None)
        then = certify.net_labels(session, ref.category_id, ref.number, cascade, new, rates)
    verdict = (
        f"final split: {chosen.describe()}{proposal.dropped}; "
        f"keeps {then:,.0f} labels net of checks, against {now:,.0f}"
    )
    if then <= now:
        ctx.progress.message(f"{ref.category}: round {ref.number}: {verdict}: the rounds' labels stay")
        return False
    labeled, left = _replace_split(ctx, ref, rounds, fitted, proposal, verdict)
    ctx.progress.message(
        f"{ref.category}: round {ref.number}: {verdict}: the model labeled {labeled[1]} positive, "
        f"{labeled[0]} negative, to be certified; {left} left"
    )
    return True


def _labels_of(session: Session, category_id: int, rounds: list[int]) -> int:
    """Model labels the category holds from ``rounds``."""
    if not rounds:
        return 0
    return int(
        session.scalar(
            select(func.count()).where(
                Label.category_id == category_id, Label.source == LabelSource.MODEL, Label.round_id.in_(rounds)
            )
        )
        or 0
    )


def _provisional(session: Session, category_id: int, rounds: list[int]) -> Iterator[list[tuple[int, str]]]:
    """``(item id, sha256)`` of the category's model labels from ``rounds``, in chunks in id order."""
    after = 0
    while True:
        rows = session.execute(
            select(Item.id, Item.sha256)
            .join(Label, Label.item_id == Item.id)
            .where(
                Label.category_id == category_id,
                Label.source == LabelSource.MODEL,
                Label.round_id.in_(rounds),
                Item.id > after,
            )
            .order_by(Item.id)
            .limit(ledger.CHUNK)
        ).all()
        if not rows:
            return
        yield [(int(item), str(sha)) for item, sha in rows]
        after = int(rows[-1][0])


def _sides_of(chosen: Chosen, errors: float = 1.0) -> dict[int, tuple[int, float]]:
    """Each side of a split (label -> its labels and their expected wrong, ``errors`` times what
    the estimates expect), as :mod:`lsun_crowd.certify` plans them."""
    return {
        1: (chosen.positives, errors * chosen.positives * (1 - (chosen.expected_precision or 1.0))),
        0: (chosen.negatives, errors * chosen.expected_lost),
    }


def _worth_certifying(
    ctx: Context,
    ref: RoundRef,
    chosen: Chosen,
    noise: tuple[float, float] | None,
    positives: float,
    replacing: bool = False,
) -> tuple[Chosen, str]:
    """``chosen`` without the sides whose certification would check most of their labels (then
    people label those images, in later rounds), and what it says of them. ``positives``: the
    category's positives as the split expects them; ``replacing``: the split replaces the labels
    not certified yet."""
    proposed = _sides_of(chosen)
    with ctx.store.session() as session:
        dropped = certify.not_worth_certifying(
            session, ref.category_id, ref.number, ctx.config.cascade, proposed, noise, positives, replacing
        )
        if 1 in dropped:  # the negative side's recall bound counts on the positives: plan it without them
            reason = dropped[1]
            proposed[1] = (0, 0.0)
            dropped = certify.not_worth_certifying(  # (people label those positives instead)
                session, ref.category_id, ref.number, ctx.config.cascade, proposed, noise, positives, replacing
            )
            dropped[1] = reason
    if not dropped:
        return chosen, ""
    if 1 in dropped:
        chosen = replace(chosen, high=None, positives=0, expected_precision=None)
    if 0 in dropped:
        chosen = replace(chosen, low=None, negatives=0, expected_npv=None, expected_lost=0.0)
    return chosen, "; the model leaves to people: " + "; ".join(dropped.values())


def drawn_from_the_pool_now(
    session: Session,
    category_id: int,
    number: int,
    rounds: list[int | None],
    features: NDArray[np.float32],
    device: str,
    reopened: bool = False,
) -> NDArray[np.bool_]:
    """Which of people's labels (each with its round, ``rounds``; its image's embedding,
    ``features``) are of images the pool as round ``number`` finds it would hold: drawn by a split
    round's sample (not a certification's, an audit's or a repair's), and beyond none of the
    thresholds of the splits since, each re-scored with that round's stored head. A split takes the
    region beyond its thresholds out of the pool; the rest of an earlier sample stays a uniform
    sample of what is left. ``reopened`` (:func:`final_split`): the splits since the last
    certification give their labels back, so only those a certification tested take a region out.
    (Labels a certification gave back count as still taken: fewer labels, never a biased one.)
    Taking only the samples drawn since the last split that labeled anything left a 12,000-image
    pool's negatives priced on one round's 280 labels, and never split."""
    splits = session.execute(
        select(Round.id, Round.number, Round.high_threshold, Round.low_threshold).where(
            Round.category_id == category_id, Round.kind == RoundKind.SPLIT, Round.number <= number
        )
    ).all()
    certifications = session.scalars(
        select(Round.number).where(
            Round.category_id == category_id, Round.kind == RoundKind.CERTIFY, Round.number < number
        )
    ).all()
    # The split whose labels each certification tested: the latest before it.
    tested = {max((at for _, at, _, _ in splits if at < done), default=-1) for done in certifications}
    drawn_at = {int(round_id): int(at) for round_id, at, _, _ in splits}
    at = np.array([drawn_at.get(round_id, -1) if round_id is not None else -1 for round_id in rounds], dtype=np.int64)
    fresh = at >= 0
    for round_id, split_number, high, low in splits:
        concerned = np.flatnonzero(fresh & (at <= split_number))
        if (high is None and low is None) or split_number >= number or len(concerned) == 0:
            continue
        if reopened and split_number not in tested:
            continue
        beyond = _beyond(session, round_id, high, low, features[concerned], device)
        if beyond is not None:
            fresh[concerned[beyond]] = False
    return fresh


def _beyond(
    session: Session,
    round_id: int,
    high: float | None,
    low: float | None,
    features: NDArray[np.float32],
    device: str,
) -> NDArray[np.bool_] | None:
    """Which of ``features`` split round ``round_id``'s stored head scores beyond its thresholds
    (``None``: no head stored)."""
    stored = session.scalar(select(RoundModel.head).where(RoundModel.round_id == round_id))
    if stored is None:
        return None
    logits = Head.from_bytes(stored, pick_device(device)).logits(features)
    beyond = np.zeros(len(features), dtype=bool)
    if high is not None:
        beyond |= logits >= high
    if low is not None:
        beyond |= logits <= low
    return beyond


def draw_weights(
    session: Session,
    category_id: int,
    number: int,
    rounds: list[int | None],
    features: NDArray[np.float32],
    device: str,
) -> NDArray[np.float64]:
    """Each of people's labels (its round, ``rounds``; its image's embedding, ``features``) weighed
    as a draw from every image the category's rounds have sampled from: one over its image's chance
    to be drawn, the sum, over the split rounds up to ``number`` whose pool held it, of the round's
    sample over its pool. A pool held it until a split's thresholds took it (re-scored with that
    round's stored head, as :func:`drawn_from_the_pool_now` does). 0 for a label no split round
    drew. For a final split (:func:`final_split`), whose pool is all of those images again: the
    later rounds draw from the hard images the earlier splits left, and unweighted, their share of
    the labels priced the final model's sure regions as dirty."""
    splits = session.execute(
        select(Round.id, Round.number, Round.high_threshold, Round.low_threshold, Round.pool_size)
        .where(Round.category_id == category_id, Round.kind == RoundKind.SPLIT, Round.number <= number)
        .order_by(Round.number)
    ).all()
    drawn_at = {int(round_id): int(at) for round_id, at, _, _, _ in splits}
    at = np.array([drawn_at.get(round_id, -1) if round_id is not None else -1 for round_id in rounds], dtype=np.int64)
    taken_by = np.full(len(rounds), np.iinfo(np.int64).max, dtype=np.int64)  # the split whose thresholds took it
    for round_id, split_number, high, low, _ in splits:
        concerned = np.flatnonzero((at >= 0) & (at <= split_number) & (taken_by > split_number))
        if (high is None and low is None) or split_number >= number or len(concerned) == 0:
            continue
        beyond = _beyond(session, round_id, high, low, features[concerned], device)
        if beyond is not None:
            taken_by[concerned[beyond]] = split_number
    # A round's uniform draw is from its pool without its candidates (:mod:`lsun_crowd.guided`).
    sampled: dict[int, dict[str, int]] = {}
    for round_id, role, count in session.execute(
        select(RoundItem.round_id, RoundItem.role, func.count())
        .where(RoundItem.round_id.in_([round_id for round_id, _, _, _, _ in splits]))
        .group_by(RoundItem.round_id, RoundItem.role)
    ):
        sampled.setdefault(int(round_id), {})[str(role)] = int(count)
    chance = np.zeros(len(rounds))
    for round_id, split_number, _, _, pool in splits:
        roles = sampled.get(round_id, {})
        drawn, free = roles.get(ItemRole.TRAIN, 0), (pool or 0) - roles.get(ItemRole.CANDIDATE, 0)
        if drawn and free > 0:
            chance += np.where(taken_by >= split_number, min(1.0, drawn / free), 0.0)
    return np.where((at >= 0) & (chance > 0), 1 / np.maximum(chance, 1e-12), 0.0)


@dataclass(frozen=True)
class Known:
    positives: float  # positives the category's labels hold or are expected to: people's, gold, the model's
    lost: float  # positives expected among the model's negatives so far


def _known(session: Session, category_id: int, gold_positives: int, excluding: list[int] | None = None) -> Known:
    """What the category's labels say of its positives: people's count, and the model's expected
    from its labels' calibrated confidences (one aggregate over the labels), but for the model's
    labels from the rounds ``excluding`` (those a final split replaces)."""
    positives = float(gold_positives)
    lost = 0.0
    kept = Label.category_id == category_id
    if excluding:
        kept = kept & ((Label.source != LabelSource.MODEL) | Label.round_id.not_in(excluding))
    for label, source, total, count in session.execute(
        select(Label.label, Label.source, func.sum(Label.confidence), func.count())
        .where(kept)
        .group_by(Label.label, Label.source)
    ):
        if source != LabelSource.MODEL:
            positives += int(count) if label == 1 else 0
        elif label == 1:
            positives += float(total)
        else:
            lost += int(count) - float(total)
    return Known(positives + lost, lost)
