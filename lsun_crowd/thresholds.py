"""A round's thresholds, chosen by point estimates: cheap, and checked later by certification.

The round's head scores the whole pool into a histogram of logits (memory fixed, whatever the
pool), and the head's Platt scaling, fitted on out-of-fold scores of every human label, turns each
bin into a probability of positive. The expected precision of "everything at or above ``high``"
is then the mean of those probabilities over the pool above it, and likewise the expected NPV and
the expected number of positives below ``low``. Each round takes the loosest thresholds whose
estimates keep a margin inside the targets (:data:`PLAN_SHARE` of each allowed error, and
:data:`PLAN_RECALL_SHARE` of the positives the category may lose), so that the category's one
certification (:mod:`lsun_crowd.acceptance`) finds what it tests to be true. Nothing here is a
guarantee: the guarantee is the certification's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit

LOGIT_LIMIT = 40.0
BINS = 4000  # logit bins of 0.02 over [-40, 40]
# Each round aims inside the targets: expected error at most this share of what is allowed...
PLAN_SHARE = 0.5
# ... and expected positives below the low threshold at most this share of those the recall
# target lets the category lose (certifying recall costs the most labels, and the fewer the
# positives it finds among the auto-negatives the fewer it needs).
PLAN_RECALL_SHARE = 0.3


def logit_edges() -> NDArray[np.float64]:
    return np.linspace(-LOGIT_LIMIT, LOGIT_LIMIT, BINS + 1)


@dataclass
class ScoreHistogram:
    """Counts of pool logits in :data:`BINS` fixed bins (logits beyond the range fall in the end bins)."""

    counts: NDArray[np.int64] = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))

    def add(self, logits: NDArray[np.float64]) -> None:
        index = np.clip(np.searchsorted(logit_edges(), logits, side="right") - 1, 0, BINS - 1)
        self.counts += np.bincount(index, minlength=BINS)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def expected_positives(self, calibrated: Calibrated) -> float:
        edges = logit_edges()
        return float((self.counts * calibrated.probability((edges[:-1] + edges[1:]) / 2)).sum())


@dataclass(frozen=True)
class Calibrated:
    """Platt scaling of a head's logits: ``P(positive | logit) = sigmoid(slope * logit + intercept)``."""

    slope: float
    intercept: float

    def probability(self, logits: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(expit(self.slope * np.asarray(logits, dtype=np.float64) + self.intercept))


@dataclass(frozen=True)
class Goals:
    target_precision: float
    target_npv: float
    lose_at_most: float  # expected positives the round's auto-negatives may hold (inf: no recall target)


@dataclass(frozen=True)
class Chosen:
    """The round's thresholds on logits (``None``: that side labels nothing) and what the
    estimates expect of them."""

    high: float | None
    low: float | None
    positives: int  # pool images at or above ``high``
    negatives: int
    expected_precision: float | None
    expected_npv: float | None
    expected_lost: float  # expected positives among the auto-negatives
    expected_positives: float  # expected positives in the whole pool

    def describe(self) -> str:
        parts = []
        if self.high is not None:
            parts.append(
                f"{self.positives:,} above logit {self.high:.2f} (expected precision {self.expected_precision:.4f})"
            )
        if self.low is not None:
            parts.append(
                f"{self.negatives:,} below logit {self.low:.2f} (expected NPV {self.expected_npv:.4f}, "
                f"{self.expected_lost:.1f} positives)"
            )
        return "; ".join(parts) if parts else "no threshold"


PRIOR_STRENGTH = 1.0  # a Gaussian prior on the calibration's slope and intercept, around the head's own


def fit_calibration(
    logits: NDArray[np.float64], labels: NDArray[np.int_], weights: NDArray[np.float64] | None = None
) -> Calibrated:
    """Logistic calibration of out-of-fold logits on people's labels, by Newton's method, with hard
    targets and a Gaussian prior (:data:`PRIOR_STRENGTH`) pulling slope and intercept towards the
    head's own scale (1, 0). Platt's smoothed targets (:func:`lsun_crowd.consensus.fit_platt`)
    cap every probability near ``1 - 1/(n + 2)``: on 40 positives no image could be more than
    97.6% sure, which priced a set of near-certain auto-labels at 1.5% wrong (measured 0.3%).
    ``weights``: each label's weight (scaled to a mean of 1, so the prior weighs the same)."""
    x = np.asarray(logits, dtype=np.float64)
    y = (np.asarray(labels) == 1).astype(np.float64)
    w = (
        np.ones_like(x)
        if weights is None
        else np.asarray(weights, dtype=np.float64) / max(float(np.mean(weights)), 1e-300)
    )
    design = np.stack([x, np.ones_like(x)], axis=1)
    centre = np.array([1.0, 0.0])

    def loss(theta: NDArray[np.float64]) -> float:
        z = design @ theta
        prior = PRIOR_STRENGTH / 2 * float((theta - centre) @ (theta - centre))
        return float((w * (np.logaddexp(0, z) - y * z)).sum()) + prior

    theta = centre.copy()
    for _ in range(100):
        p = expit(design @ theta)
        gradient = design.T @ (w * (p - y)) + PRIOR_STRENGTH * (theta - centre)
        hessian = (design * (w * p * (1 - p))[:, None]).T @ design + PRIOR_STRENGTH * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        # Halve the step until the loss falls: from slope 1, a full Newton step on logits in the
        # tens overshoots (a head ten times too sure was "calibrated" to a slope of 41,201).
        current = loss(theta)
        while loss(theta - step) > current and np.abs(step).max() > 1e-12:
            step = step / 2
        theta = theta - step
        if np.abs(step).max() < 1e-10:
            break
    return Calibrated(float(theta[0]), float(theta[1]))


def choose(histogram: ScoreHistogram, calibrated: Calibrated, goals: Goals) -> Chosen:
    """The loosest high and low thresholds whose expected precision, NPV and lost positives, over
    every pool image they would label, stay within :data:`PLAN_SHARE` of the targets' allowance,
    and that label no image whose own calibrated probability misses the target: a band of
    uncertain images is left for people rather than for the certification, whose sample grows with
    the errors it expects (on a 20,000-image pool, labeling that band too took 0.49 votes an image
    where leaving it took 0.34)."""
    edges = logit_edges()
    counts = histogram.counts.astype(np.float64)
    p = calibrated.probability((edges[:-1] + edges[1:]) / 2)
    expected_positives = float((counts * p).sum())
    # Positive side: images in bins i.. are labeled positive at threshold edges[i].
    above = np.cumsum(counts[::-1])[::-1]
    above_right = np.cumsum((counts * p)[::-1])[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(above > 0, above_right / np.maximum(above, 1), 1.0)
    goal = 1 - PLAN_SHARE * (1 - goals.target_precision)
    fine = (precision >= goal) & (p >= goals.target_precision)
    # The loosest bin from which every stricter one is fine too.
    broken = np.flatnonzero(~fine)
    first = int(broken[-1]) + 1 if len(broken) else 0
    high_index = first if first < BINS and above[first] > 0 else None
    # Negative side: images in bins ..i-1 are labeled negative at threshold edges[i].
    below = np.concatenate([[0.0], np.cumsum(counts)])
    below_positive = np.concatenate([[0.0], np.cumsum(counts * p)])
    with np.errstate(invalid="ignore", divide="ignore"):
        npv = np.where(below > 0, 1 - below_positive / np.maximum(below, 1), 1.0)
    goal_npv = 1 - PLAN_SHARE * (1 - goals.target_npv)
    leaning = np.concatenate([[0.0], p])  # the probability of the last bin a cut includes
    ok = (npv >= goal_npv) & (below_positive <= goals.lose_at_most) & (leaning <= 1 - goals.target_npv)
    if high_index is not None:
        ok[high_index + 1 :] = False  # never past the high threshold
    bad = np.flatnonzero(~ok)
    last = int(bad[0]) - 1 if len(bad) else BINS
    low_index = last if last > 0 and below[last] > 0 else None
    return Chosen(
        float(edges[high_index]) if high_index is not None else None,
        float(edges[low_index]) if low_index is not None else None,
        int(above[high_index]) if high_index is not None else 0,
        int(below[low_index]) if low_index is not None else 0,
        float(precision[high_index]) if high_index is not None else None,
        float(npv[low_index]) if low_index is not None else None,
        float(below_positive[low_index]) if low_index is not None else 0.0,
        expected_positives,
    )


def decide(scores: NDArray[np.float64], high: float | None, low: float | None) -> NDArray[np.int8]:
    """1 positive (at or above ``high``), 0 negative (at or below ``low``), -1 left for people."""
    decision = np.full(len(scores), -1, dtype=np.int8)
    if high is not None:
        decision[scores >= high] = 1
    if low is not None:
        decision[scores <= low] = 0
    return decision
