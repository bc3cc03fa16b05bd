from __future__ import annotations

import math

import numpy as np
import pytest

from lsun_crowd.split import choose_thresholds, lower_bound


def test_clopper_pearson_by_hand() -> None:
    # All of n correct: the one-sided lower bound is (1 - confidence) ** (1 / n).
    assert lower_bound(np.array([20.0]), np.array([20.0]), 0.9)[0] == pytest.approx(0.1 ** (1 / 20))
    assert lower_bound(np.array([0.0]), np.array([5.0]), 0.9)[0] == 0.0
    assert lower_bound(np.array([3.0]), np.array([4.0]), 0.0)[0] == 0.75


def test_thresholds_on_a_hand_made_calibration_set() -> None:
    scores = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], dtype=float)
    labels = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    thresholds = choose_thresholds(scores, labels, target_precision=0.75, target_npv=0.8, confidence=0.0)
    # Precision at >= 5 is 4/5 = 0.8 (ok), at >= 4 it is 4/6 (not): high = 5.
    assert thresholds.high == 5.0
    # Below 5 the labels are all negative: low = 4, the largest score below high.
    assert thresholds.low == 4.0
    assert thresholds.decide(np.array([10.0, 5.0, 4.5, 4.0, -1.0])).tolist() == [1, 1, -1, 0, 0]


def test_the_bound_makes_small_sets_cautious() -> None:
    scores = np.linspace(1, 0, 10)
    labels = np.array([1] * 5 + [0] * 5)
    point = choose_thresholds(scores, labels, 0.95, 0.95, confidence=0.0)
    assert point.high == scores[4] and point.low == scores[5]
    cautious = choose_thresholds(scores, labels, 0.95, 0.95, confidence=0.9)
    assert math.isinf(cautious.high) and math.isinf(cautious.low)
    assert cautious.decide(scores).tolist() == [-1] * 10


def test_tied_scores_are_never_split() -> None:
    scores = np.array([1.0, 1.0, 1.0, 0.0])
    labels = np.array([1, 1, 0, 0])
    thresholds = choose_thresholds(scores, labels, 0.9, 0.9, confidence=0.0)
    assert math.isinf(thresholds.high)  # the tie at 1.0 holds a negative: no cut can be made inside it


def test_guarantee_holds_on_simulated_scores() -> None:
    """Over many random calibration sets the realised precision on fresh data reaches the target
    far more often than a point estimate does."""
    rng = np.random.default_rng(0)
    target = 0.95

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = (rng.random(n) < 0.3).astype(int)
        return rng.normal(labels * 2.0, 1.0), labels

    failures = {0.0: 0, 0.9: 0}
    for _ in range(200):
        scores, labels = draw(200)
        fresh_scores, fresh_labels = draw(20000)
        for confidence in failures:
            high = choose_thresholds(scores, labels, target, 0.99, confidence).high
            chosen = fresh_scores >= high
            if chosen.sum() and fresh_labels[chosen].mean() < target:
                failures[confidence] += 1
    assert failures[0.9] < 0.15 * 200
    assert failures[0.9] < failures[0.0] / 2
