"""Choosing the split thresholds on held-out human labels, with a lower confidence bound.

Images scoring at or above the high threshold become positive, at or below the low threshold
negative, and the rest stay unlabeled. Each threshold is the most permissive one whose held-out
precision (or negative predictive value) still has a Clopper–Pearson lower bound at the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import beta


@dataclass(frozen=True)
class Thresholds:
    high: float  # score >= high: positive; math.inf when nothing qualifies
    low: float  # score <= low: negative; -math.inf when nothing qualifies
    precision_bound: float  # lower bound on the held-out precision above ``high`` (nan if none)
    npv_bound: float  # lower bound on the held-out NPV at or below ``low`` (nan if none)
    calibration_size: int

    def decide(self, scores: NDArray[np.float64]) -> NDArray[np.int8]:
        """1 positive, 0 negative, -1 left for humans."""
        decision = np.full(len(scores), -1, dtype=np.int8)
        decision[scores >= self.high] = 1
        decision[scores <= self.low] = 0
        return decision


def lower_bound(successes: NDArray[np.float64], trials: NDArray[np.float64], confidence: float) -> NDArray[np.float64]:
    """One-sided Clopper–Pearson lower bound on a rate; the plain rate when ``confidence`` is 0."""
    if confidence <= 0:
        return successes / np.maximum(trials, 1)
    failures = trials - successes
    bound = beta.ppf(1 - confidence, np.maximum(successes, 1e-12), failures + 1)
    return np.where(successes > 0, bound, 0.0)


def _most_permissive(
    scores: NDArray[np.float64], correct: NDArray[np.bool_], target: float, confidence: float
) -> tuple[int, float]:
    """Longest prefix (cut only between distinct scores) whose bound on accuracy reaches ``target``."""
    if len(scores) == 0:
        return 0, math.nan
    hits = np.cumsum(correct).astype(np.float64)
    sizes = np.arange(1, len(scores) + 1, dtype=np.float64)
    boundary = np.append(scores[1:] != scores[:-1], True)  # a cut may not split tied scores
    bounds = lower_bound(hits, sizes, confidence)
    qualifying = np.flatnonzero(boundary & (bounds >= target))
    if len(qualifying) == 0:
        return 0, math.nan
    last = int(qualifying[-1])
    return last + 1, float(bounds[last])


def choose_thresholds(
    scores: NDArray[np.float64],
    labels: NDArray[np.int_],
    target_precision: float,
    target_npv: float,
    confidence: float,
) -> Thresholds:
    """Thresholds from calibration ``scores`` and their human ``labels`` (1/0)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    descending = np.argsort(-scores, kind="stable")
    count, precision = _most_permissive(scores[descending], labels[descending] == 1, target_precision, confidence)
    high = float(scores[descending][count - 1]) if count else math.inf

    below = scores < high
    ascending = np.argsort(scores[below], kind="stable")
    low_scores = scores[below][ascending]
    count, npv = _most_permissive(low_scores, labels[below][ascending] == 0, target_npv, confidence)
    low = float(low_scores[count - 1]) if count else -math.inf
    return Thresholds(high, low, precision, npv, len(scores))
