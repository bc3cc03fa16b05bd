"""MTurk's fee schedule, written once in ``lsun_crowd.fees``: its edges to the cent, and the MTurk
adapter and the simulated crowd charging exactly the same for the same batches."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from lsun_crowd_mock import CrowdMix, SimulatedCrowd
from lsun_crowd_mturk import Api, MTurkCrowd, MTurkSettings, make_client

from lsun_crowd.crowd import CostEstimate, HitBatch, HitItem, HitSpec
from lsun_crowd.fees import assignment_fee, batch_cost, bonus_fee


def batch(reward: str, assignments: int, hits: int = 1) -> HitBatch:
    specs = tuple(HitSpec(f"h{n}", (HitItem(str(n), f"/img/{n}.png"),)) for n in range(hits))
    return HitBatch("p:cat:r1", "cat", "q?", specs, assignments, Decimal(reward))


@pytest.mark.parametrize(
    ("reward", "assignments", "fee"),
    [
        ("0.01", 9, "0.01"),  # 20% is $0.002: the minimum fee
        ("0.01", 10, "0.01"),  # 40% is $0.004: still the minimum
        ("0.00", 3, "0.01"),  # the minimum holds even for nothing
        ("0.05", 9, "0.01"),
        ("0.05", 10, "0.02"),
        ("0.07", 9, "0.01"),  # $0.014 rounds down
        ("0.07", 10, "0.03"),  # $0.028 rounds up
        ("0.52", 9, "0.10"),  # MTurk's own examples: $0.104 → $0.10,
        ("0.525", 9, "0.11"),  # $0.105 → $0.11 (half up, not to even),
        ("0.54", 9, "0.11"),  # $0.108 → $0.11
        ("0.125", 9, "0.03"),  # $0.025: half up gives 3 cents where half-even would give 2
        ("0.50", 9, "0.10"),
        ("0.50", 10, "0.20"),
        ("0.50", 100, "0.20"),
    ],
)
def test_the_fee_on_one_assignment(reward: str, assignments: int, fee: str) -> None:
    assert assignment_fee(Decimal(reward), assignments) == Decimal(fee)
    assert assignment_fee(Decimal(reward), assignments, "none") == Decimal("0.00")


def test_the_fee_on_a_bonus_is_20_percent_at_least_a_cent() -> None:
    assert bonus_fee(Decimal("0.25")) == Decimal("0.05")
    assert bonus_fee(Decimal("1.00")) == Decimal("0.20")  # no surcharge for large HITs on bonuses
    assert bonus_fee(Decimal("0.01")) == Decimal("0.01")  # the minimum
    assert bonus_fee(Decimal("0.525")) == Decimal("0.11")
    assert bonus_fee(Decimal("0.25"), "none") == Decimal("0.00")


def test_a_batch_costs_every_assignment_rounded_one_by_one() -> None:
    # Rounding per assignment, not on the total: 30 assignments of 0.07 at 40% cost 30 × 0.03.
    assert batch_cost(batch("0.07", 10, hits=3)) == CostEstimate(Decimal("2.10"), Decimal("0.90"))
    assert batch_cost(batch("0.07", 9, hits=3)) == CostEstimate(Decimal("1.89"), Decimal("0.27"))
    assert batch_cost(batch("0.05", 10, hits=4)) == CostEstimate(Decimal("2.00"), Decimal("0.80"))
    assert batch_cost(batch("0.05", 3, hits=4), "none") == CostEstimate(Decimal("0.60"), Decimal("0.00"))


BATCHES = [
    batch(reward, assignments, hits)
    for reward in ("0.00", "0.01", "0.02", "0.05", "0.07", "0.125", "0.525", "1.00")
    for assignments in (1, 3, 9, 10, 25)
    for hits in (1, 7)
]


def test_the_simulated_crowd_and_mturk_estimate_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    settings = MTurkSettings()
    mturk = MTurkCrowd(Api(make_client(settings), settings), settings, "p")  # estimating asks MTurk nothing
    mock = SimulatedCrowd(lambda uri, category: True, CrowdMix(), tmp_path / "mock.sqlite")
    free = SimulatedCrowd(lambda uri, category: True, CrowdMix(fees="none"), tmp_path / "free.sqlite")
    try:
        for each in BATCHES:
            assert mock.estimate_cost(each) == mturk.estimate_cost(each) == batch_cost(each), each
            assert free.estimate_cost(each) == CostEstimate(mturk.estimate_cost(each).rewards, Decimal("0.00"))
    finally:
        mock.close()
        free.close()


def test_the_simulated_crowd_debits_what_it_estimates(tmp_path: Path) -> None:
    crowd = SimulatedCrowd(lambda uri, category: True, CrowdMix(balance=Decimal("10")), tmp_path / "mock.sqlite")
    try:
        each = batch("0.07", 10, hits=3)
        crowd.publish(each)
        assert crowd.balance() == Decimal("10") - Decimal("2.10") - Decimal("0.90")
    finally:
        crowd.close()
