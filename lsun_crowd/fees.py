"""Mechanical Turk's commission schedule, written once: the MTurk adapter estimates with it, and the
simulated crowd charges it, so a simulated run costs what the same run would cost on MTurk.

The schedule (MTurk's pricing page, https://requester.mturk.com/pricing): 20% of the reward and of
any bonus paid to workers; HITs with 10 or more assignments pay another 20% of the reward (40% in
all; bonuses stay at 20%); the fee is at least $0.01 per assignment and per bonus payment.

Rounding: the pricing page's FAQ ("What rounding rules are applied when calculating fees?") says
that once the fee is calculated it is rounded half up to the cent: $0.104 becomes $0.10, $0.105
and $0.108 become $0.11. MTurk charges the fee when it pays each assignment, so it is computed and
rounded per assignment (and per bonus), then the minimum applies. We read that FAQ through a
verbatim quotation (turkrequesters.blogspot.com, January 2016) and a transcription of the pricing
page, not the live page itself.

Money is :class:`~decimal.Decimal`, never a float; rewards are taken as given (the adapter sends
MTurk the reward in cents).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from lsun_crowd.crowd import CostEstimate, HitBatch

FeeSchedule = Literal["mturk", "none"]
"""Which fees a platform charges: MTurk's schedule, or none at all (an in-house team)."""

CENT = Decimal("0.01")
COMMISSION = Decimal("0.20")  # of the reward and of any bonus
LARGE_HIT_SURCHARGE = Decimal("0.20")  # more, of the reward, for HITs with many assignments
LARGE_HIT_ASSIGNMENTS = 10  # from this many assignments per HIT on
MINIMUM_FEE = CENT  # per assignment and per bonus payment
ZERO = Decimal("0.00")


def to_cent(amount: Decimal) -> Decimal:
    """Rounded half up to the cent, as MTurk rounds its fees."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def commission_rate(assignments_per_hit: int) -> Decimal:
    """The share of each reward MTurk keeps: 20%, 40% for HITs of 10 or more assignments."""
    return COMMISSION + (LARGE_HIT_SURCHARGE if assignments_per_hit >= LARGE_HIT_ASSIGNMENTS else 0)


def assignment_fee(reward: Decimal, assignments_per_hit: int, schedule: FeeSchedule = "mturk") -> Decimal:
    """MTurk's fee on one assignment of a HIT with ``assignments_per_hit`` assignments."""
    if schedule == "none":
        return ZERO
    return max(MINIMUM_FEE, to_cent(reward * commission_rate(assignments_per_hit)))


def bonus_fee(amount: Decimal, schedule: FeeSchedule = "mturk") -> Decimal:
    """MTurk's fee on one bonus payment: 20% of it (whatever the HIT's size), at least a cent."""
    if schedule == "none":
        return ZERO
    return max(MINIMUM_FEE, to_cent(amount * COMMISSION))


def batch_cost(batch: HitBatch, schedule: FeeSchedule = "mturk") -> CostEstimate:
    """Rewards and fees of every assignment of ``batch``, if every one is approved."""
    assignments = len(batch.hits) * batch.assignments_per_hit
    fee = assignment_fee(batch.reward_per_assignment, batch.assignments_per_hit, schedule)
    return CostEstimate(batch.reward_per_assignment * assignments, fee * assignments)
