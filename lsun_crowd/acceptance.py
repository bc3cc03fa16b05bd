"""Certifying a fixed set of auto-labels once, by acceptance sampling: the pure statistics.

After its rounds, a category's model labels are two fixed sets, the auto-positives and the
auto-negatives. Each set is cut into nested subsets by the model's confidence (strictest first),
from the labels' confidences alone. A uniform random sample of each set, drawn after the set is
fixed, goes to people. For a subset holding ``size`` labels of which ``sampled`` were drawn and
``bad`` turned out wrong (or unresolved), the null hypothesis "the labels of the subset that people
did not check are wrong more often than allowed" is tested exactly (hypergeometric, finite
population, conditional on how many of the sample fell in the subset). The subsets are tested in
their fixed order and the walk stops at the first that fails (Learn-then-Test's fixed sequence:
no correction for the number of subsets). The loosest subset that passed keeps its model labels;
the labels looser than it go back to the pool, and the sampled images keep people's labels.

Why the statement is about the *unchecked* labels: a sampled image takes people's label, so what
stays a model label is the subset less its sample. With ``D0 = floor(allowed * (size - sampled)) +
1`` wrong labels among the unchecked being the null's least case, the p-value of ``bad`` is
``P(X <= bad)`` for ``X ~ Hypergeometric(size, D0 + bad, sampled)``: for any true number of wrong
labels ``E`` in the subset, the event "``E - bad >= D0`` and the test passes" has probability at
most ``delta`` (the tail ``P(X <= x)`` falls as ``E`` grows). Recall is the same test with
``D0 = most + 1``: at most ``most`` positives may be left among the unchecked auto-negatives.

See ``docs/guarantees.md`` for the whole statement and its assumptions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import hypergeom, poisson

UNRESOLVED = -1  # people's answer for a checked image they could not label with confidence
# A walk starts at the smallest subset where this many wrong labels in its sample could still
# pass: one crowd slip among the strictest few then does not end the walk before the subsets that
# carry most of the labels.
START_ERRORS = 2
# A certification's sample is planned to pass with at least this many wrong labels: people slip
# (on the simulated crowd, 2 of 171 checked positives the model had right).
PLANNED_SLIPS = 2
SAMPLE_MARGIN = 1.15  # a certification checks this many times the fewest labels its plan needs
# Subsets grow by this ratio, from the smallest one tested to the whole set.
GRID_RATIO = 1.15
SMALLEST_SHARE = 0.05  # the strictest subset considered holds this share of the set
# A second look is sized to pass this often at the pessimistic rate of wrong labels (plan_looks).
INSURED_SHARE = 0.8


def unchecked_p_value(bad: int, size: int, sampled: int, most_wrong: int) -> float:
    """p-value of "more than ``most_wrong`` of the subset's unchecked labels are wrong", given
    ``bad`` of the ``sampled`` checked ones were; 0 where nothing is left unchecked."""
    if sampled >= size:
        return 0.0 if bad >= 0 else 1.0
    wrong = most_wrong + 1 + bad
    if wrong > size:
        return 0.0
    return float(hypergeom.cdf(bad, size, wrong, sampled))


def most_wrong_allowed(target: float, unchecked: int) -> int:
    """Wrong labels an unchecked set of this size may hold and still meet ``target``."""
    return math.floor((1 - target) * unchecked + 1e-9)


@dataclass(frozen=True)
class Subset:
    """A subset of one side's labels: those at least ``bound`` confident, ``size`` of them."""

    bound: float
    size: int


def nested_subsets(
    confidences: NDArray[np.float64], counts: NDArray[np.int64], ends: frozenset[int] = frozenset()
) -> list[Subset]:
    """The candidate subsets of a side, strictest first, from a histogram of its labels'
    confidences (``counts[i]`` labels at or above ``confidences[i]`` and below the previous edge;
    edges descending): subsets whose sizes grow by :data:`GRID_RATIO` from
    :data:`SMALLEST_SHARE` of the side, those ending at the indices ``ends`` (a stratum's last
    bin), and the whole side last."""
    total = int(counts.sum())
    if total == 0:
        return []
    cumulative = np.cumsum(counts)
    chosen: list[Subset] = []
    wanted = max(1.0, SMALLEST_SHARE * total)
    for index, (edge, size) in enumerate(zip(confidences.tolist(), cumulative.tolist(), strict=True)):
        if (size >= wanted or index in ends) and size > 0 and (not chosen or size > chosen[-1].size):
            chosen.append(Subset(float(edge), int(size)))
            wanted = size * GRID_RATIO
    if chosen[-1].size != total:
        chosen.append(Subset(float(confidences[-1]), total))
    return chosen


@dataclass(frozen=True)
class Checked:
    """What people said of one side's sample: each sampled label's model confidence, and whether
    it was wrong or unresolved (``bad``)."""

    confidences: NDArray[np.float64]
    bad: NDArray[np.bool_]


@dataclass(frozen=True)
class WalkResult:
    """The loosest subset certified (``None``: none), with its test's figures."""

    subset: Subset | None
    sampled: int = 0
    bad: int = 0
    p_value: float | None = None
    tested: int = 0  # subsets tested, the failing one included


PValue = Callable[[int, int, int], float]  # (bad, size, sampled) -> p-value


def walk(subsets: list[Subset], checked: Checked, p_value: PValue, delta: float, rate: float = 0.0) -> WalkResult:
    """Fixed-sequence testing of ``subsets`` (strictest first) at level ``delta``.

    Which subsets are in the sequence, and where it starts, depends on how many sampled images
    fall in each and on the plan's expected share of wrong labels (``rate``), never on what people
    said of them: a subset that could not pass even with no wrong label is left out, and the walk
    starts at the first subset that could pass with the wrong labels its sample should hold (see
    :func:`_start`)."""
    if delta <= 0 or not subsets:
        return WalkResult(None)
    sampled = [int((checked.confidences >= subset.bound).sum()) for subset in subsets]
    start = _start(subsets, sampled, p_value, delta, rate)
    best = WalkResult(None)
    tested = 0
    for subset, count in zip(subsets[start:], sampled[start:], strict=True):
        if count == 0 or p_value(0, subset.size, count) > delta:
            continue  # could not pass whatever people say: not in the sequence
        inside = checked.confidences >= subset.bound
        bad = int((checked.bad & inside).sum())
        value = p_value(bad, subset.size, count)
        tested += 1
        if value > delta:
            return WalkResult(best.subset, best.sampled, best.bad, best.p_value, tested)
        best = WalkResult(subset, count, bad, value, tested)
    return WalkResult(best.subset, best.sampled, best.bad, best.p_value, tested)


def _start(subsets: list[Subset], sampled: list[int], p_value: PValue, delta: float, rate: float) -> int:
    """Where the walk starts: the first subset that could pass with as many wrong labels among its
    checked ones as a Poisson count of the plan's mean there (``rate`` of them) reaches 19 times
    in 20, as the sample was sized (:func:`sample_needed`), and at least :data:`START_ERRORS`;
    failing that, the first that could pass with the plan's mean, rounded up; failing that, with
    fewer. A walk that started where the errors it meets cannot be afforded ends at the first slip.
    Where people contradict even the surest labels (0.3% of checked auto-negatives on digit scans,
    spread over every confidence), a start at 2 wrong labels ended each walk in its first subsets,
    and 6,473 checks certified nothing; and where the model's few confident mistakes sit at the
    strictest end (2 of 13,426 digit-3 auto-negatives, at confidences 0.999999 and 0.99997), a
    start at the mean ended it there, where the whole side passed (5 wrong of 2,587 checked,
    p = 0.0167 at level 0.0192)."""
    for share in (0.95, None):
        wanted = [
            max(START_ERRORS, _poisson_quantile(rate * count, share) if share else math.ceil(rate * count - 1e-9))
            for count in sampled
        ]
        for index, (subset, count, errors) in enumerate(zip(subsets, sampled, wanted, strict=True)):
            if count > errors and p_value(errors, subset.size, count) <= delta:
                return index
    for errors in range(START_ERRORS, 0, -1):
        for index, (subset, count) in enumerate(zip(subsets, sampled, strict=True)):
            if count > errors and p_value(errors, subset.size, count) <= delta:
                return index
    return 0


def sample_needed(
    size: int,
    expected_bad: float,
    p_value: Callable[[int, int], float],
    delta: float,
    share: float = 0.95,
    slips: int = PLANNED_SLIPS,
    margin: float = SAMPLE_MARGIN,
) -> int:
    """Fewest labels to check, drawn uniformly from a set of ``size``, for the whole set's test to
    pass when the checked ones hold as many wrong labels as a Poisson count of mean
    ``expected_bad * n / size`` does ``share`` of the time, and at least ``slips``
    (``p_value(bad, n)``): a sample that passes only with none fails on the first crowd slip, and a
    failed set goes back to the pool whole. ``size`` when no sample smaller than the set would do."""
    if size <= 0:
        return 0

    def passes(n: int) -> bool:
        planned = max(slips, _poisson_quantile(expected_bad * n / size, share))
        return p_value(planned, n) <= delta

    low, high = 1, 1
    while high < size and not passes(high):
        low, high = high + 1, min(size, high * 2)
    if not passes(high):
        return size
    while low < high:
        middle = (low + high) // 2
        if passes(middle):
            high = middle
        else:
            low = middle + 1
    # A margin: at the fewest that pass, the p-value sits at delta itself, and one slip more than
    # planned ends the walk at the first subset (a set of 1,901 failed at p = 0.0045 > 0.0045).
    return min(size, math.ceil(high * margin))


@dataclass(frozen=True)
class Looks:
    """A side's sample in up to two looks: people check ``first`` labels; if the walk on those does
    not certify the whole side, they check the rest of ``whole`` (drawn with the first, so that
    both are uniform samples fixed before anyone looks) and the walk is run again on all of them.
    Each look tests at half the side's budget (a union bound: the side is wrongly certified only if
    one of the two tests is), so a second look is only planned where its expected cost is lower
    than one look's. ``first == whole``: one look, at the whole budget."""

    first: int
    whole: int
    expected: float  # labels people are expected to check

    @property
    def two(self) -> bool:
        return self.whole > self.first

    def delta(self, side_delta: float) -> float:
        """The level each look tests at."""
        return look_delta(side_delta, self.two)


def look_delta(side_delta: float, two: bool) -> float:
    """The level each look of a side tests at: half its budget where it planned two looks."""
    return side_delta / 2 if two else side_delta


def plan_looks(
    size: int,
    expected_bad: float,
    p_value: Callable[[int, int], float],
    delta: float,
    insured_bad: float = 0.0,
    most: int | None = None,
) -> Looks:
    """One look sized as :func:`sample_needed` plans it, or two: a first look sized to pass with
    the wrong labels expected half of the time (none where the expected count is small) and no
    margin, then the rest of a sample sized as one look is, both at ``delta / 2``. Two looks where
    the expected checks (the first, and the second as often as the first is expected to fail) are
    fewer than one look's. A whole side that holds no errors passes its first look: on the
    simulated crowd, 0 wrong of 1,573 checked auto-negatives, where 790 would have done.

    ``insured_bad``: the wrong labels the side holds at a more pessimistic rate than the plan's.
    The second look, only asked for where the first did not certify the whole side, is sized to
    pass with as many wrong labels as a Poisson count of that mean reaches :data:`INSURED_SHARE`
    of the time, up to ``most`` checks in all."""
    single = sample_needed(size, expected_bad, p_value, delta)
    if size <= 0 or delta <= 0:
        return Looks(single, single, float(single))
    first = sample_needed(size, expected_bad, p_value, delta / 2, share=0.5, slips=0, margin=1.0)
    whole = sample_needed(size, expected_bad, p_value, delta / 2)
    if first >= min(whole, single):
        return Looks(single, single, float(single))
    mean = expected_bad * first / size
    fails = 1 - poisson.cdf(_poisson_quantile(mean, 0.5), mean)
    expected = first + fails * (whole - first)
    if expected >= single:
        return Looks(single, single, float(single))
    if insured_bad > expected_bad:
        insured = sample_needed(size, insured_bad, p_value, delta / 2, share=INSURED_SHARE)
        whole = max(whole, min(insured, size if most is None else most))
    return Looks(first, whole, first + fails * (whole - first))


def _poisson_quantile(mean: float, share: float) -> int:
    """The smallest k with P(Poisson(mean) <= k) >= share."""
    k, term = 0, math.exp(-mean)
    total = term
    while total < share and k < 10_000:
        k += 1
        term *= mean / k
        total += term
    return k
