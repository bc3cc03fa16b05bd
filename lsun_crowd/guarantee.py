"""Thresholds with a guarantee: fixed-sequence testing on a round's own calibration sample.

Learn-then-Test (Angelopoulos, Bates, Candès, Jordan and Lei, arXiv 2110.01052). On the
positive side, candidate thresholds are walked from the strictest down; each is tested with the
exact binomial p-value of "the precision of everything at or above it is below the target", and
the walk stops at the first that fails. The last one that passed is certified. The negative side
walks up from the lowest score and tests "NPV below target, or discards more than the recall
slack of the positives" (an intersection-union test: both nulls must be rejected). Because the
order is fixed before the labels are seen, no correction for the many thresholds is needed: the
chance of certifying any threshold whose true error is above the target is at most ``delta``.

Which candidates the walk tests is fixed from the scores and the calibration's size alone, before
any label is looked at. A round that expects many calibration images on a side (from the base rate
of earlier rounds' labels) starts its walk where a few errors can still pass, and tests cuts on a
geometric grid of sizes rather than at every score: one mislabeled image among the strictest
candidates then no longer ends the walk before it reaches the cuts the calibration can carry.

A calibration image the crowd could not resolve is counted against the model on both sides
(wrong above the high threshold, a positive below the low one), which can only raise a p-value.
See ``docs/guarantees.md`` for how the error budget is spread over rounds and what is assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import beta, binom

from lsun_crowd.schema import GuaranteeSide

UNRESOLVED = -1  # a calibration image people could not label with confidence
NEVER = 1 << 62  # images needed when no budget is left: no calibration is that large
# Each testing round spends this share of its side's error budget that is left, and a round that
# discards positives this share of the recall slack left: early rounds, which label most, get most.
SPEND_SHARE = 0.5
# The recall slack goes mostly to the first round that discards: it is the one that splits the
# whole pool, and a test of recall needs far more calibration positives on a small slack.
RECALL_SHARE = 0.75
# A walk that expects enough images starts where this many errors could still pass, and tests
# cuts whose sizes grow by this ratio.
START_ERRORS = 3
START_SHARE = 0.6  # ... as long as the start is at most this share of the images expected
GRID_RATIO = 1.1


def round_budget(total: float, spent: float, share: float = SPEND_SHARE) -> float:
    """The error budget (or recall slack) the next round may use, given what earlier rounds used;
    the rounds together never use more than ``total``."""
    return max(0.0, total - spent) * share


@dataclass(frozen=True)
class Calibration:
    """A round's calibration sample: the model's scores and people's labels (1, 0, or
    :data:`UNRESOLVED`). Every image drawn for calibration is in it, once."""

    scores: NDArray[np.float64]
    labels: NDArray[np.int8]

    def __post_init__(self) -> None:
        if len(self.scores) != len(self.labels):
            raise ValueError("calibration scores and labels differ in length")

    @property
    def size(self) -> int:
        return len(self.scores)

    @property
    def unresolved(self) -> int:
        return int((self.labels == UNRESOLVED).sum())


@dataclass(frozen=True)
class SideTest:
    """What one side's walk certified. ``threshold`` is ``None`` when nothing was certified (or
    nothing tested: then ``delta`` is 0, no budget spent)."""

    side: GuaranteeSide
    threshold: float | None
    target: float
    delta: float
    recall_slack: float | None
    calibration_size: int
    unresolved: int
    tested: int = 0
    errors: int = 0
    p_value: float | None = None

    @property
    def bound(self) -> float | None:
        """Exact (Clopper–Pearson) lower bound at ``1 - delta`` on the certified side's precision
        or NPV, from the calibration images it decides."""
        if self.threshold is None or self.tested == 0:
            return None
        right = self.tested - self.errors
        return float(beta.ppf(self.delta, right, self.errors + 1)) if right > 0 else 0.0

    def describe(self) -> str:
        what = "precision" if self.side == GuaranteeSide.POSITIVE else "NPV"
        if self.delta == 0:
            return f"{self.side}: not tested (calibration of {self.calibration_size} too small)"
        if self.threshold is None:
            return f"{self.side}: nothing certified at {what} {self.target:g} (error budget {self.delta:.4f})"
        recall = f", discarding at most {self.recall_slack:.3f} of positives" if self.recall_slack else ""
        p_value = "" if self.p_value is None else f"p = {self.p_value:.2g} <= {self.delta:.4f}; "
        return (
            f"{self.side}: {what} >= {self.target:g}{recall} ({p_value}"
            f"{self.errors} wrong of {self.tested} calibration images)"
        )


def min_tested(target: float, delta: float) -> int:
    """Fewest calibration images a threshold must decide to pass with no error at all: a test on
    fewer could never reject, so it would only end the walk early."""
    if delta <= 0:
        return NEVER
    return max(1, math.ceil(math.log(delta) / math.log(target)))


def fewest_to_pass(target: float, delta: float, errors: int) -> int:
    """Fewest images a cut must decide to pass with ``errors`` of them wrong."""
    if delta <= 0:
        return NEVER
    low = high = min_tested(target, delta)
    while binom.cdf(errors, high, 1 - target) > delta:
        low, high = high, high * 2
    while low < high:  # the smallest n in (low, high] whose p-value is at most delta
        middle = (low + high) // 2
        if binom.cdf(errors, middle, 1 - target) > delta:
            low = middle + 1
        else:
            high = middle
    return high


@dataclass(frozen=True)
class Walk:
    """Where a side's walk starts (images the first candidate decides) and the grid it follows
    (``None``: every distinct score)."""

    start: int
    ratio: float | None = None

    @classmethod
    def plan(cls, target: float, delta: float, expected: float) -> Walk:
        """The walk for a side expected to have ``expected`` calibration images to test: it starts
        where up to :data:`START_ERRORS` errors could pass, as long as that is at most
        :data:`START_SHARE` of them, and follows the :data:`GRID_RATIO` grid; with fewer, it is the plain walk."""
        for errors in range(START_ERRORS, 0, -1):
            start = fewest_to_pass(target, delta, errors)
            if start <= expected * START_SHARE:
                return cls(start, GRID_RATIO)
        return cls(min_tested(target, delta))

    def candidates(self, tested: NDArray[np.int_], boundary: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """Which cuts are tested: at a boundary, deciding at least ``start`` images, and with a
        grid the first such cut at or after each grid size and the loosest one."""
        eligible = boundary & (tested >= self.start)
        if self.ratio is None or not eligible.any():
            return eligible
        sizes = tested[eligible]
        grid = [self.start]
        while grid[-1] < sizes[-1]:
            grid.append(max(grid[-1] + 1, math.ceil(grid[-1] * self.ratio)))
        # The first cut at or after each grid size, and the loosest cut of all.
        picked = np.unique(np.minimum(np.searchsorted(sizes, np.array(grid)), len(sizes) - 1))
        chosen = np.zeros_like(eligible)
        chosen[np.flatnonzero(eligible)[picked]] = True
        return chosen


def _walk(
    side: GuaranteeSide,
    calibration: Calibration,
    target: float,
    delta: float,
    recall: float | None,
    scores: NDArray[np.float64],
    tested: NDArray[np.int_],
    errors: NDArray[np.int_],
    p_values: NDArray[np.float64],
    candidate: NDArray[np.bool_],
) -> SideTest:
    """Walk the candidate cuts in order (index order: strictest first) and certify the last one
    passed before the first whose p-value exceeds ``delta``; nothing if the first one fails."""
    order = np.flatnonzero(candidate)
    failed = np.flatnonzero(p_values[order] > delta)
    passed = order if len(failed) == 0 else order[: failed[0]]
    if len(passed) == 0:
        return SideTest(side, None, target, delta, recall, calibration.size, calibration.unresolved)
    last = int(passed[-1])
    return SideTest(
        side,
        float(scores[last]),
        target,
        delta,
        recall,
        calibration.size,
        calibration.unresolved,
        int(tested[last]),
        int(errors[last]),
        float(p_values[last]),
    )


def certify_positive(calibration: Calibration, target: float, delta: float, walk: Walk | None = None) -> SideTest:
    """The loosest high threshold reached from the strictest by fixed-sequence testing of
    "precision at or above it < ``target``" at level ``delta``, along ``walk`` (by default every
    cut deciding at least :func:`min_tested` images)."""
    if calibration.size < min_tested(target, delta):
        return SideTest(GuaranteeSide.POSITIVE, None, target, 0.0, None, calibration.size, calibration.unresolved)
    order = np.argsort(-calibration.scores, kind="stable")
    scores = calibration.scores[order]
    errors = np.cumsum(calibration.labels[order] != 1)
    tested = np.arange(1, len(scores) + 1)
    boundary = np.append(scores[1:] != scores[:-1], True)  # a cut never splits tied scores
    p_values = binom.cdf(errors, tested, 1 - target)
    candidate = (walk or Walk(min_tested(target, delta))).candidates(tested, boundary)
    return _walk(GuaranteeSide.POSITIVE, calibration, target, delta, None, scores, tested, errors, p_values, candidate)


def certify_negative(
    calibration: Calibration,
    target: float,
    delta: float,
    recall_slack: float,
    below: float = math.inf,
    walk: Walk | None = None,
    discard_limit: float | None = None,
) -> SideTest:
    """The highest low threshold (under ``below``, the high threshold) reached from the lowest
    score by fixed-sequence testing of "NPV at or below it < ``target``, or more than
    ``recall_slack`` of the positives at or below it". ``recall_slack`` 0 tests NPV alone.

    With ``discard_limit``, recall is tested against a share of the whole pool instead: "more
    than ``discard_limit`` of the pool's images are positives at or below the cut" (exact
    binomial over every calibration image). A round sets it to ``recall_slack`` times the
    positives already known, over its pool's size, when those known positives outnumber the
    positives its pool is expected to hold: later rounds then need no calibration positives of
    their own to discard the negatives of an enriched remainder."""
    recall = recall_slack if recall_slack > 0 else None
    needed = min_tested(target, delta)
    if recall is not None and discard_limit is None:
        needed = max(needed, min_tested(1 - recall, delta))
    if calibration.size < needed:
        return SideTest(GuaranteeSide.NEGATIVE, None, target, 0.0, recall, calibration.size, calibration.unresolved)
    order = np.argsort(calibration.scores, kind="stable")
    scores = calibration.scores[order]
    labels = calibration.labels[order]
    tested = np.arange(1, len(scores) + 1)
    errors = np.cumsum(labels != 0)  # positives and unresolved images at or below the cut
    p_values = binom.cdf(errors, tested, 1 - target)
    if recall is not None and discard_limit is not None:
        # Positives (and unresolved images) the cut discards, against the share of the pool allowed.
        p_values = np.maximum(p_values, binom.cdf(errors, calibration.size, min(max(discard_limit, 0.0), 1.0)))
    elif recall is not None:
        # Positives: every resolved one, and the unresolved ones the cut would discard.
        positives = int((labels == 1).sum()) + np.cumsum(labels == UNRESOLVED)
        p_recall = np.where(positives > 0, binom.cdf(errors, np.maximum(positives, 1), recall), 1.0)
        p_values = np.maximum(p_values, p_recall)
    boundary = np.append(scores[1:] != scores[:-1], True) & (scores < below)
    candidate = (walk or Walk(min_tested(target, delta))).candidates(tested, boundary)
    side = GuaranteeSide.NEGATIVE
    return _walk(side, calibration, target, delta, recall, scores, tested, errors, p_values, candidate)


def decide(scores: NDArray[np.float64], high: float | None, low: float | None) -> NDArray[np.int8]:
    """1 positive (at or above ``high``), 0 negative (at or below ``low``), -1 left for people."""
    decision = np.full(len(scores), -1, dtype=np.int8)
    if high is not None:
        decision[scores >= high] = 1
    if low is not None:
        decision[scores <= low] = 0
    return decision
