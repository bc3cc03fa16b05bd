"""Model-aware consensus: the previous round's classifier as one more, calibrated annotator.

This is the idea behind cleanlab's CROWDLAB, in the form the cascade allows. The images a round
sends to humans were all in the pool when the previous round's model was trained, so its score
for each of them is out of sample. Platt scaling on the active calibration labels (human labels,
never trained on, and still a random sample of the pool) turns that score into a probability for
exactly this population. Taking the model and the workers as independent given the true class,
the model's evidence is a likelihood ratio, its calibrated odds over the calibration set's base
odds, and adds to the crowd's log-odds. An image with two agreeing votes that the model also
backs can then be confident enough to need no third vote; one the model doubts gets more votes.

The model's evidence is bounded by what one good worker's vote carries (:func:`evidence_bound`),
so it can tip a close call but never outvote people, and each label records its part in it
(:func:`model_share`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit

from lsun_crowd.aggregate import Posterior

MIN_CALIBRATION_LABELS = 30  # fewer held-out labels than this calibrate no model
NEWTON_STEPS = 100
RIDGE = 1e-3  # keeps the Newton step defined when every calibration score is the same


@dataclass(frozen=True)
class PlattScaling:
    """``P(positive | score) = sigmoid(slope * score + intercept)`` on the calibration population."""

    slope: float
    intercept: float
    base_rate: float  # positive share of the labels it was fitted on, Platt-smoothed
    size: int

    def log_likelihood_ratio(self, scores: NDArray[np.float64]) -> NDArray[np.float64]:
        """The model's evidence for "positive", in nats, net of the population's base rate."""
        prior = math.log(self.base_rate / (1 - self.base_rate))
        return np.asarray(self.slope * np.asarray(scores, dtype=np.float64) + self.intercept - prior)


def fit_platt(scores: NDArray[np.float64], labels: NDArray[np.int_], min_size: int) -> PlattScaling | None:
    """Platt scaling by Newton's method on smoothed targets (Platt 1999), so that a calibration set
    that the score separates perfectly still gives finite odds. ``None`` when there are fewer than
    ``min_size`` labels or one class is missing: such a model is no annotator to trust."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels) == 1
    positives, negatives = int(y.sum()), int((~y).sum())
    if len(x) < min_size or positives == 0 or negatives == 0:
        return None
    target = np.where(y, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    design = np.stack([x, np.ones_like(x)], axis=1)

    def loss(theta: NDArray[np.float64]) -> float:
        z = design @ theta
        # Cross-entropy against the soft targets, written to stay finite for any z.
        return float((np.logaddexp(0, z) - target * z).sum() + RIDGE / 2 * theta @ theta)

    theta = np.array([0.0, math.log((positives + 1) / (negatives + 1))])
    for _ in range(NEWTON_STEPS):
        p = expit(design @ theta)
        gradient = design.T @ (p - target) + RIDGE * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + RIDGE * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        # Halve the step until the loss falls: plain Newton can overshoot on separable scores.
        current = loss(theta)
        while loss(theta - step) > current and np.abs(step).max() > 1e-12:
            step = step / 2
        theta = theta - step
        if np.abs(step).max() < 1e-10:
            break
    if not np.isfinite(theta).all():
        return None
    base = (positives + 1) / (len(x) + 2)
    return PlattScaling(float(theta[0]), float(theta[1]), base, len(x))


# The accuracy of the good worker whose vote bounds the model's evidence, when the crowd's own
# estimates cannot say (no workers measured): what the simulated crowd's honest workers average.
GOOD_WORKER = 0.95
GOOD_WORKER_CAP = 0.99  # no estimate makes one vote, or the model, worth more than this accuracy


def evidence_bound(posterior: Posterior) -> float:
    """The most evidence, in nats, the model may add to an image's log-odds: what one good
    worker's vote carries, the logit of the median accuracy of the workers the crowd's fit
    measured (CROWDLAB weighs the model as one annotator among the workers the same way). A
    model's calibrated evidence has no bound of its own: on an image unlike any it trained on
    it extrapolates, and two unanimous "yes" votes became a human negative at confidence 1.0."""
    accuracies = [value for value in posterior.worker_accuracy.values() if np.isfinite(value)]
    accuracy = float(np.median(accuracies)) if accuracies else GOOD_WORKER
    accuracy = min(max(accuracy, 0.5), GOOD_WORKER_CAP)
    return math.log(accuracy / (1 - accuracy))


def model_share(posterior: Posterior, evidence: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per item, the model's part in the log-odds of the label ``posterior`` (which includes the
    ``evidence``) gives it: the evidence toward that label over the label's whole log-odds, in
    [-1, 1]; negative where the model argued against the label, 0 where it had no say."""
    p = np.clip(posterior.probabilities[:, 1], 1e-300, 1.0)
    q = np.clip(posterior.probabilities[:, 0], 1e-300, 1.0)
    log_odds = np.log(p) - np.log(q)
    toward = np.where(log_odds >= 0, evidence, -evidence)
    share = np.divide(toward, np.abs(log_odds), out=np.zeros(len(evidence)), where=np.abs(log_odds) > 0)
    return np.asarray(np.clip(share, -1.0, 1.0), dtype=np.float64)


def with_model(posterior: Posterior, evidence: NDArray[np.float64], bound: float = math.inf) -> Posterior:
    """The crowd's binary posterior with the model's log-likelihood ratio for class 1 added to each
    item's log-odds (0 where the model has nothing to say), each clipped to ``bound`` nats (see
    :func:`evidence_bound`). Worker estimates are the crowd's."""
    if len(posterior.classes) != 2:
        raise ValueError("model-aware consensus needs a binary posterior")
    if len(evidence) != len(posterior.items):
        raise ValueError("one log-likelihood ratio per item is needed")
    evidence = np.clip(np.asarray(evidence, dtype=np.float64), -bound, bound)
    rows = np.flatnonzero(evidence)
    probabilities = posterior.probabilities.copy()
    p = np.clip(probabilities[rows, 1], 1e-300, 1.0)
    q = np.clip(probabilities[rows, 0], 1e-300, 1.0)
    positive = expit(np.log(p) - np.log(q) + evidence[rows])
    probabilities[rows] = np.stack([1 - positive, positive], axis=1)
    return replace(posterior, probabilities=probabilities)
