"""Planning a round: the recall slack's share, and samples sized to what the tests need."""

from __future__ import annotations

import math

import pytest

from lsun_crowd.config import CascadeConfig
from lsun_crowd.guarantee import RECALL_SHARE, fewest_to_pass, min_tested, round_budget
from lsun_crowd.round_plan import MARGIN, Budget, calibration_needed, discard_limit, sample_size

CASCADE = CascadeConfig(sample_per_round=20_000, calibration_fraction=0.6)
FIRST = Budget(0.0125, 0.0125, 0.075)


def test_the_recall_slack_goes_mostly_to_the_first_discarding_round() -> None:
    slack = [round_budget(0.1, 0.0, RECALL_SHARE)]
    for _ in range(20):
        slack.append(round_budget(0.1, sum(slack), RECALL_SHARE))
    assert slack[0] == pytest.approx(0.075) and slack[1] == pytest.approx(0.01875)
    assert sum(slack) <= 0.1
    # 57 calibration positives, none discarded, carry a 0.075 slack; 0.05 needed 86.
    assert min_tested(1 - 0.075, 0.0125) == 57 and min_tested(1 - 0.05, 0.0125) == 86


def test_what_each_test_needs_at_a_base_rate() -> None:
    needs = calibration_needed(CASCADE, FIRST, 0.1)
    assert needs["precision"] == pytest.approx(fewest_to_pass(0.97, 0.0125, 1) / 0.1)  # 2,100
    assert needs["npv"] == pytest.approx(fewest_to_pass(0.995, 0.0125, 1) / 0.9)
    assert needs["recall"] == pytest.approx(58 / 0.1)
    assert "recall" not in calibration_needed(CASCADE, Budget(0.0125, 0.0125, 0.0), 0.1)


def test_a_planned_sample_asks_for_what_the_tests_need_and_no_more() -> None:
    # Nothing known yet: the configured size, never more than half the pool.
    assert sample_size(CASCADE, FIRST, None, 1_000_000) == 20_000
    assert sample_size(CASCADE, FIRST, None, 30_000) == 15_000
    # At 30% positives NPV needs the most: 1,276 / 0.7 images, with the margin, over the fraction.
    npv = fewest_to_pass(0.995, 0.0125, 1) / 0.7
    assert sample_size(CASCADE, FIRST, 0.3, 1_000_000) == math.ceil(npv * MARGIN / 0.6)
    # At 1% the precision test would need 210 / 0.01 images, beyond the 20,000 a round may send,
    # so the round is sized for NPV and recall alone.
    rare = calibration_needed(CASCADE, FIRST, 0.01)
    assert rare["precision"] * MARGIN / 0.6 > 20_000
    assert sample_size(CASCADE, FIRST, 0.01, 1_000_000) == math.ceil(rare["recall"] * MARGIN / 0.6)
    assert sample_size(CASCADE, FIRST, 0.01, 10_000) == 5_000


def test_recall_is_tested_against_the_pool_once_known_positives_outnumber_its_own() -> None:
    # 9,000 positives known, a pool of 20,000 expected to hold 6% (1,200): a share of the pool.
    assert discard_limit(0.02, 9_000, 20_000, 0.06) == pytest.approx(0.02 * 9_000 / 20_000)
    # A first round knows only its gold: the calibration's own positives it is.
    assert discard_limit(0.075, 10, 1_000_000, 0.01) is None
    assert discard_limit(0.0, 9_000, 20_000, 0.06) is None
    # Testing that way needs ln(1/delta) / limit images, not calibration positives.
    pooled = calibration_needed(CASCADE, Budget(0.00625, 0.00625, 0.02), 0.06, discard=0.009)
    assert pooled["recall"] == min_tested(1 - 0.009, 0.00625) + 1 < 600
