"""Fixed-sequence threshold tests: hand-checked cases, and the guarantee's error rate measured."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from lsun_crowd.guarantee import (
    GRID_RATIO,
    UNRESOLVED,
    Calibration,
    Walk,
    certify_negative,
    certify_positive,
    decide,
    fewest_to_pass,
    min_tested,
    round_budget,
)


def calibration(scores: list[float], labels: list[int]) -> Calibration:
    return Calibration(np.array(scores, dtype=np.float64), np.array(labels, dtype=np.int8))


def test_fewest_images_a_threshold_needs() -> None:
    # 0.97 ** n <= 0.0125 first at n = 144; 0.995 ** n <= 0.0125 at n = 875.
    assert min_tested(0.97, 0.0125) == 144
    assert 0.97**144 <= 0.0125 < 0.97**143
    assert min_tested(0.995, 0.0125) == 875
    assert min_tested(0.9, 0.0) > 10**12


def test_the_walk_stops_at_the_first_failure() -> None:
    # 200 images, strictest first; one error at rank 150 and many from rank 180 on.
    labels = [1] * 200
    labels[149] = 0
    for rank in range(179, 200):
        labels[rank] = 0
    scores = list(np.linspace(10, 0, 200))
    test = certify_positive(calibration(scores, labels), target=0.97, delta=0.0125)
    # Ranks 144..149 pass with no error; rank 150 brings one error: P(Bin(150, .03) <= 1) > delta.
    assert binom.cdf(1, 150, 0.03) > 0.0125
    assert test.tested == 149 and test.errors == 0 and test.threshold == scores[148]
    assert test.p_value == pytest.approx(0.97**149)
    # Even though a later, looser cut (rank 179, 1 error of 179) would pass on its own, the walk
    # never gets there: that is what makes testing every candidate need no correction.
    assert binom.cdf(1, 179, 0.03) < 0.03
    assert test.bound == pytest.approx(0.0125 ** (1 / 149))


def test_a_small_calibration_spends_no_budget() -> None:
    test = certify_positive(calibration([1.0] * 100, [1] * 100), target=0.97, delta=0.0125)
    assert test.threshold is None and test.delta == 0.0
    assert "not tested" in test.describe()


def test_unresolved_images_count_against_the_model() -> None:
    scores = list(np.linspace(10, 0, 300))
    clean = certify_positive(calibration(scores, [1] * 300), 0.97, 0.0125)
    assert clean.tested == 300
    labels = [1] * 300
    labels[10] = UNRESOLVED  # counted as wrong above the threshold
    with_unresolved = certify_positive(calibration(scores, labels), 0.97, 0.0125)
    assert with_unresolved.threshold is None and with_unresolved.delta == 0.0125
    # On the negative side an unresolved image below the cut is a discarded positive.
    negative_labels = [0] * 1000
    negative_labels[5] = UNRESOLVED
    low = certify_negative(calibration(list(np.linspace(0, 1, 1000)), negative_labels), 0.995, 0.0125, 0.0)
    assert low.threshold is None


def test_ties_are_never_split() -> None:
    scores = [2.0] * 150 + [1.0] * 10
    labels = [1] * 150 + [0] * 10
    test = certify_positive(calibration(scores, labels), 0.97, 0.0125)
    assert test.threshold == 2.0 and test.tested == 150
    tied = certify_positive(calibration([1.0] * 160, [1] * 150 + [0] * 10), 0.97, 0.0125)
    assert tied.threshold is None


def test_recall_protects_a_rare_category() -> None:
    """20,000 calibration images, 1% positive, a weak model: NPV alone certifies a cut that
    discards most positives (0.99 NPV holds all the same); the recall slack keeps them."""
    rng = np.random.default_rng(0)
    labels = (rng.random(20_000) < 0.01).astype(np.int8)
    scores = rng.normal(size=20_000) + labels * 1.0
    npv_only = certify_negative(Calibration(scores, labels), 0.99, 0.0125, recall_slack=0.0)
    assert npv_only.threshold is not None
    assert labels[scores <= npv_only.threshold].sum() / labels.sum() > 0.8
    with_recall = certify_negative(Calibration(scores, labels), 0.99, 0.0125, recall_slack=0.05)
    assert with_recall.threshold is not None and with_recall.recall_slack == 0.05
    assert labels[scores <= with_recall.threshold].sum() / labels.sum() < 0.05


def test_the_negative_cut_stays_below_the_positive_one() -> None:
    scores = list(np.linspace(0, 1, 2000))
    test = certify_negative(calibration(scores, [0] * 2000), 0.995, 0.0125, 0.0, below=0.5)
    assert test.threshold is not None and test.threshold < 0.5
    decision = decide(np.array([0.9, 0.5, 0.49, 0.1]), 0.5, test.threshold)
    assert decision.tolist() == [1, 1, -1 if test.threshold < 0.49 else 0, 0]


def test_budget_shares_never_exceed_the_total() -> None:
    spent = 0.0
    for _ in range(50):
        spent += round_budget(0.025, spent)
    assert spent <= 0.025 and spent == pytest.approx(0.025, rel=1e-6)
    assert round_budget(0.025, 0.0) == 0.0125 and round_budget(0.025, 0.03) == 0.0


def test_the_guarantee_holds_at_its_confidence() -> None:
    """3,000 calibration draws where the true precision crosses the target inside the candidate
    range: the certified threshold's true precision is below target in at most delta of them
    (the old rule, the loosest passing bound at confidence 0.5, misses far more often)."""
    rng = np.random.default_rng(7)
    delta, target, draws, n = 0.05, 0.97, 3000, 600
    misses = 0
    for _ in range(draws):
        scores = rng.random(n)
        # P(wrong | score s) rises as s falls: true precision above s is 1 - 0.05 * (1 - s)**2 * ...
        wrong = rng.random(n) < 0.12 * (1 - scores) ** 2
        labels = np.where(wrong, 0, 1).astype(np.int8)
        test = certify_positive(Calibration(scores, labels), target, delta)
        if test.threshold is not None and _true_precision(test.threshold) < target:
            misses += 1
    assert misses / draws <= delta


def test_a_planned_walk_starts_where_a_few_errors_still_pass() -> None:
    # P(Bin(n, .03) <= e) <= .0125 first at n = 144, 210, 268, 322 for e = 0..3.
    assert [fewest_to_pass(0.97, 0.0125, errors) for errors in range(4)] == [144, 210, 268, 322]
    assert binom.cdf(3, 322, 0.03) <= 0.0125 < binom.cdf(3, 321, 0.03)
    # Expecting 1,000 positives: start at 322 (at most 60% of them), on a 10% grid.
    assert Walk.plan(0.97, 0.0125, 1000) == Walk(322, GRID_RATIO)
    assert Walk.plan(0.97, 0.0125, 400) == Walk(210, GRID_RATIO)  # 268 > 240
    assert Walk.plan(0.97, 0.0125, 300) == Walk(144)  # too few for any error: the plain walk
    grid = Walk(100, 1.5).candidates(np.arange(1, 401), np.ones(400, dtype=bool))
    assert (np.flatnonzero(grid) + 1).tolist() == [100, 150, 225, 338, 400]


def test_one_early_error_no_longer_ends_a_planned_walk() -> None:
    # 1,000 images, all right but one among the strictest ten (an unresolved image, or a crowd slip).
    labels = [1] * 1000
    labels[3] = 0
    scores = list(np.linspace(10, 0, 1000))
    plain = certify_positive(calibration(scores, labels), 0.97, 0.0125)
    assert plain.threshold is None  # the first candidate (144 images, 1 error) fails, so all do
    planned = certify_positive(calibration(scores, labels), 0.97, 0.0125, Walk.plan(0.97, 0.0125, 1000))
    assert planned.threshold == scores[-1] and planned.tested == 1000 and planned.errors == 1


def test_the_guarantee_holds_on_a_planned_walk() -> None:
    """The same 3,000 draws as above with the walk planned from the size: still at most delta."""
    rng = np.random.default_rng(11)
    delta, target, draws, n = 0.05, 0.97, 3000, 600
    walk = Walk.plan(target, delta, n)
    assert walk.ratio is not None
    misses = certified = 0
    for _ in range(draws):
        scores = rng.random(n)
        labels = np.where(rng.random(n) < 0.12 * (1 - scores) ** 2, 0, 1).astype(np.int8)
        test = certify_positive(Calibration(scores, labels), target, delta, walk)
        certified += test.threshold is not None
        misses += test.threshold is not None and _true_precision(test.threshold) < target
    assert certified > draws / 2 and misses / draws <= delta


def _true_precision(threshold: float) -> float:
    # Precision of s >= t for s ~ U(0, 1) and P(wrong | s) = 0.12 (1 - s)^2: 1 - 0.04 (1 - t)^2.
    return 1 - 0.04 * (1 - threshold) ** 2


def test_calibration_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        Calibration(np.zeros(3), np.zeros(2, dtype=np.int8))
    assert math.isfinite(min_tested(0.5, 0.5))


def test_recall_against_a_share_of_the_pool_needs_no_calibration_positives() -> None:
    # An enriched remainder's negatives: 1,500 images, two positives, both among the highest scores.
    scores = list(np.linspace(0, 1, 1500))
    labels = [0] * 1498 + [1, 1]
    conditional = certify_negative(calibration(scores, labels), 0.995, 0.0125, 0.02)
    assert conditional.threshold is None  # two positives can never show a 2% slack is kept
    pooled = certify_negative(calibration(scores, labels), 0.995, 0.0125, 0.02, discard_limit=0.01)
    assert pooled.threshold is not None and pooled.tested >= 1400 and pooled.errors <= 1
    # (1 - 0.01) ** n <= 0.0125 from n = 437: a smaller calibration could not show it.
    assert binom.cdf(0, 437, 0.01) <= 0.0125 < binom.cdf(0, 436, 0.01)


def test_the_pooled_recall_test_holds_at_its_confidence() -> None:
    """2,000 draws where positives sit low enough that loose cuts discard more than the limit:
    the certified cut discards more than ``discard_limit`` of the pool in at most delta of them."""
    rng = np.random.default_rng(5)
    delta, limit, draws, n = 0.05, 0.01, 2000, 1500
    misses = 0
    for _ in range(draws):
        scores = rng.random(n)
        # P(positive | s) = 0.04 s: the pool's share of positives at or below t is 0.02 t^2.
        labels = (rng.random(n) < 0.04 * scores).astype(np.int8)
        test = certify_negative(Calibration(scores, labels), 0.5, delta, 0.05, discard_limit=limit)
        if test.threshold is not None and 0.02 * test.threshold**2 > limit:
            misses += 1
    assert misses / draws <= delta
