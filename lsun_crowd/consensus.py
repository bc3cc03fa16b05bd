"""Model-aware consensus: the previous round's classifier as one more, calibrated annotator.

This is the idea behind cleanlab's CROWDLAB, in the form the cascade allows. The images a round
sends to humans were all in the pool when the previous round's model was trained, so its score
for each of them is out of sample. Platt scaling on the active calibration labels (human labels,
never trained on, and still a random sample of the pool) turns that score into a probability for
exactly this population. Taking the model and the workers as independent given the true class,
the model's evidence is a likelihood ratio, its calibrated odds over the calibration set's base
odds, and adds to the crowd's log-odds. An image with two agreeing votes that the model also
backs can then be confident enough to need no third vote; one the model doubts gets more votes.
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


def with_model(posterior: Posterior, evidence: NDArray[np.float64]) -> Posterior:
    """The crowd's binary posterior with the model's log-likelihood ratio for class 1 added to each
    item's log-odds (0 where the model has nothing to say). Worker estimates are the crowd's."""
    if len(posterior.classes) != 2:
        raise ValueError("model-aware consensus needs a binary posterior")
    if len(evidence) != len(posterior.items):
        raise ValueError("one log-likelihood ratio per item is needed")
    rows = np.flatnonzero(evidence)
    probabilities = posterior.probabilities.copy()
    p = np.clip(probabilities[rows, 1], 1e-300, 1.0)
    q = np.clip(probabilities[rows, 0], 1e-300, 1.0)
    positive = expit(np.log(p) - np.log(q) + evidence[rows])
    probabilities[rows] = np.stack([1 - positive, positive], axis=1)
    return replace(posterior, probabilities=probabilities)
