"""Acceptance sampling's tests, walks and sample sizes (lsun_crowd.acceptance), and the point
estimates rounds choose thresholds with (lsun_crowd.thresholds)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta, hypergeom
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lsun_crowd import ledger
from lsun_crowd.acceptance import (
    UNRESOLVED,
    Checked,
    Subset,
    most_wrong_allowed,
    nested_subsets,
    plan_looks,
    sample_needed,
    unchecked_p_value,
    walk,
)
from lsun_crowd.autolabel import RoundHead, economical, region_rate
from lsun_crowd.certificate import certificates
from lsun_crowd.certify import (
    SideCounts,
    _bins,
    could_pass,
    noise_floor,
    order_key,
    sampled_positives,
    side_looks,
    split_key,
    split_votes_unresolved,
)
from lsun_crowd.config import CascadeConfig
from lsun_crowd.schema import (
    AssignmentRow,
    Category,
    Hit,
    Item,
    ItemRole,
    LabelSource,
    Round,
    RoundItem,
    RoundModel,
    RoundState,
    Vote,
    Worker,
)
from lsun_crowd.store import Store, category_id, insert_ignoring_duplicates
from lsun_crowd.thresholds import Calibrated, Goals, ScoreHistogram, choose, decide, fit_calibration


def test_the_p_value_is_the_hypergeometric_tail_of_the_least_null() -> None:
    # 1,000 labels, 200 checked, 1 wrong: the null's least case is floor(0.03 * 800) + 1 = 25
    # wrong among the unchecked, so 26 in the set.
    assert most_wrong_allowed(0.97, 800) == 24
    assert unchecked_p_value(1, 1_000, 200, 24) == hypergeom.cdf(1, 1_000, 26, 200)
    assert 0.02 < unchecked_p_value(1, 1_000, 200, 24) < 0.025
    # Everything checked: nothing is left to be wrong.
    assert unchecked_p_value(3, 50, 50, 1) == 0.0
    # Zero wrong among 122 of a huge set is what precision 0.97 needs at delta 0.025 (0.97**122) ...
    assert unchecked_p_value(0, 10**7, 122, most_wrong_allowed(0.97, 10**7 - 122)) <= 0.025
    assert unchecked_p_value(0, 10**7, 121, most_wrong_allowed(0.97, 10**7 - 121)) > 0.025
    # ... while a small set must be checked nearly whole: its unchecked rest may hold no wrong label.
    assert unchecked_p_value(0, 180, 150, most_wrong_allowed(0.97, 30)) == 30 / 180


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(50, 3_000),
    share=st.floats(0.02, 0.6),
    excess=st.integers(1, 20),
    delta=st.sampled_from([0.01, 0.025, 0.05]),
)
def test_a_set_that_misses_its_target_passes_at_most_delta_of_the_time(
    size: int, share: float, excess: int, delta: float
) -> None:
    """Exactly, over every possible sample: for a set whose unchecked labels would hold more wrong
    ones than allowed, the chance the test passes is at most ``delta``."""
    sampled = max(1, int(size * share))
    allowed = most_wrong_allowed(0.97, size - sampled)
    wrong = min(size, allowed + excess)  # wrong labels in the set
    passing = 0.0
    for bad in range(0, min(wrong, sampled) + 1):
        if wrong - bad <= allowed:
            continue  # the unchecked would meet the target: no error to count
        if unchecked_p_value(bad, size, sampled, allowed) <= delta:
            passing += float(hypergeom.pmf(bad, size, wrong, sampled))
    assert passing <= delta + 1e-9


def test_nested_subsets_grow_from_the_strictest_to_the_whole_side() -> None:
    edges = np.linspace(1.0, 0.5, 101)  # descending confidences
    counts = np.full(101, 10, dtype=np.int64)
    subsets = nested_subsets(edges, counts)
    sizes = [subset.size for subset in subsets]
    assert sizes[-1] == 1_010 and sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert sizes[0] >= 0.05 * 1_010
    assert all(later / earlier <= 1.15 + 10 / earlier for earlier, later in itertools.pairwise(sizes))
    bounds = [subset.bound for subset in subsets]
    assert bounds == sorted(bounds, reverse=True)


def _p(target: float):  # type: ignore[no-untyped-def]
    return lambda bad, size, n: unchecked_p_value(bad, size, n, most_wrong_allowed(target, size - n))


def test_the_walk_certifies_the_loosest_subset_before_the_first_failure() -> None:
    # 10,000 labels with confidences spread evenly; the loosest fifth is mostly wrong.
    generator = np.random.default_rng(0)
    confidence = generator.uniform(0.5, 1.0, 10_000)
    wrong = np.where(confidence < 0.6, generator.random(10_000) < 0.3, generator.random(10_000) < 0.002)
    edges = np.linspace(1.0, 0.5, 501)
    counts = np.array(
        [
            int(((confidence >= low) & (confidence < high)).sum())
            for high, low in zip(np.concatenate([[np.inf], edges[:-1]]), edges, strict=True)
        ]
    )
    subsets = nested_subsets(edges, counts)
    picked = generator.choice(10_000, 1_000, replace=False)
    result = walk(subsets, Checked(confidence[picked], wrong[picked]), _p(0.97), 0.025)
    assert result.subset is not None
    # It stops inside the bad band, where the subset's precision nears the target: what it keeps
    # unchecked meets 0.97, and it keeps nearly all of the good labels.
    kept = (confidence >= result.subset.bound) & ~np.isin(np.arange(10_000), picked)
    assert 1 - wrong[kept].mean() >= 0.97
    assert 0.5 < result.subset.bound < 0.6 and kept.sum() > 0.75 * 9_000
    assert result.tested > 1 and result.p_value is not None and result.p_value <= 0.025


def test_a_walk_skips_subsets_too_small_to_pass_and_starts_where_a_slip_can_pass() -> None:
    # Ten subsets of a 100,000-label side; the checked labels of the strictest one hold one slip.
    subsets = [Subset(1 - 0.01 * index, 10_000 * (index + 1)) for index in range(10)]
    confidence = np.repeat(1 - 0.01 * np.arange(10) - 0.001, 100)  # 100 checked in each tenth
    bad = np.zeros(1_000, dtype=bool)
    bad[0] = True  # one slip among the strictest
    result = walk(subsets, Checked(confidence, bad), _p(0.97), 0.025)
    assert result.subset == subsets[-1] and result.bad == 1


def test_a_walk_starts_where_the_errors_the_plan_expects_can_pass() -> None:
    # People contradict 0.2% of a side's labels at every confidence (on digit scans, the model's
    # own tail errors): 6,000 checked of 12,000, against NPV 0.995. Started where two errors can
    # pass, the walk meets four in its third subset and certifies nothing; started where the
    # plan's 0.2% can pass, it certifies the whole side.
    size, checked = 12_000, 6_000
    subsets = [Subset(1 - 0.001 * (index + 1), size * (index + 1) // 10) for index in range(10)]
    confidence = np.repeat(1 - 0.001 * np.arange(10) - 0.0001, checked // 10)
    bad = np.zeros(checked, dtype=bool)
    bad[::500] = True  # 12 wrong, evenly spread
    npv = _p(0.995)
    assert walk(subsets, Checked(confidence, bad), npv, 0.03).subset is None
    result = walk(subsets, Checked(confidence, bad), npv, 0.03, rate=0.002)
    assert result.subset == subsets[-1] and result.bad == 12
    assert result.tested == 6  # from the fifth subset on, where 6 errors in 3,000 checked pass


def test_a_walk_starts_where_the_plan_s_errors_pass_nineteen_times_in_twenty() -> None:
    # Digit scans: a final split's 13,426 auto-negatives, 2,587 of them checked (0.081% expected
    # wrong). Five checked labels count as wrong, all among the strictest: the model's confident
    # mistakes (at 0.999999 and 0.99997) and people's slips. Started where the plan's mean (two
    # errors) could pass, the walk ended in its first subset; the whole side passes.
    generator = np.random.default_rng(3)
    size, checked, delta, rate = 13_426, 2_587, 0.0192, 0.00081
    side = SideCounts.empty(1)
    confidence = 1 - 10 ** generator.uniform(-7, -2.5, size)
    side.add(confidence, np.zeros(size, dtype=np.int64))
    picked = np.sort(confidence[generator.choice(size, checked, replace=False)])[::-1]
    bad = np.zeros(checked, dtype=bool)
    bad[[0, 3, 7, 12, 20]] = True
    keys = order_key(np.zeros(checked, dtype=np.int64), 1, _bins(picked))
    npv = _p(0.995)
    result = walk(side.subsets(), Checked(keys, bad), npv, delta, rate)
    assert result.subset is not None and result.subset.size == size and result.bad == 5
    assert result.tested == 1 and result.p_value is not None and result.p_value <= delta
    # Where the mean's two errors can pass, the five make the subset fail.
    subsets = side.subsets()
    counts = [int((keys >= subset.bound).sum()) for subset in subsets]
    mean_start = next(
        i for i, (s, n) in enumerate(zip(subsets, counts, strict=True)) if n > 2 and npv(2, s.size, n) <= delta
    )
    inside = keys >= subsets[mean_start].bound
    assert npv(int(bad[inside].sum()), subsets[mean_start].size, counts[mean_start]) > delta


def test_the_sample_size_is_what_the_test_needs() -> None:
    def p_value(size: int):  # type: ignore[no-untyped-def]
        return lambda bad, n: unchecked_p_value(bad, size, n, most_wrong_allowed(0.995, size - n))

    # NPV 0.995 at delta 0.025 with no errors expected, planned to pass with two slips (about 1,450),
    # and 15% more (log(0.025)/log(0.995) = 736 would pass only with none).
    assert 1_500 <= sample_needed(10**6, 0.0, p_value(10**6), 0.025) <= 1_850
    # Errors expected cost more; a set too small for any sample is checked whole.
    assert sample_needed(10**6, 1_000.0, p_value(10**6), 0.025) > 1_000
    assert sample_needed(300, 0.0, p_value(300), 0.025) >= 295


def test_two_looks_are_planned_where_they_are_expected_to_cost_less_than_one() -> None:
    def p_value(size: int):  # type: ignore[no-untyped-def]
        return lambda bad, n: unchecked_p_value(bad, size, n, most_wrong_allowed(0.995, size - n))

    single = sample_needed(10**6, 0.0, p_value(10**6), 0.025)
    looks = plan_looks(10**6, 0.0, p_value(10**6), 0.025)
    # No errors expected: a first look that passes with none at delta / 2 (log(0.0125)/log(0.995) =
    # 875), and the rest of a sample sized as one look is, at delta / 2, only if that one fails.
    assert looks.two and 875 <= looks.first <= 880 and looks.whole > single
    assert looks.expected == pytest.approx(looks.first) and looks.delta(0.025) == 0.0125
    # Errors expected: the first look is sized to pass with the median count; two looks only where
    # the expected checks (the second as often as the first should fail) are fewer than one look's.
    for expected_wrong in (100.0, 1_000.0, 2_000.0, 4_000.0):
        one = sample_needed(10**6, expected_wrong, p_value(10**6), 0.025)
        planned = plan_looks(10**6, expected_wrong, p_value(10**6), 0.025)
        assert planned.first < one < planned.whole and planned.first <= planned.expected < one
    # A side too small for a sample would be checked (nearly) whole: not worth certifying.
    assert plan_looks(300, 0.0, p_value(300), 0.025).expected >= 295


def test_a_second_look_is_sized_for_the_pessimistic_rate_up_to_its_cap() -> None:
    size = 15_289  # the common digit's final auto-negatives on 20,000 digit scans (seed 0)

    def p_value(bad: int, n: int) -> float:
        return unchecked_p_value(bad, size, n, most_wrong_allowed(0.995, size - n))

    delta = 0.018 * 2  # the side's budget: 0.018 a look
    plain = plan_looks(size, 0.00036 * size, p_value, delta)
    insured = plan_looks(size, 0.00036 * size, p_value, delta, 0.0019 * size, size // 2)
    # The first look and when the second is asked for do not change; the second is larger.
    assert insured.first == plain.first and insured.two and insured.whole > plain.whole
    # The case it was made for: 3 of the planned sample wrong (0.17%) fails, and passes on the
    # insured one at the realized rate (9 wrong of 5,000).
    assert p_value(3, plain.whole) > delta / 2
    assert p_value(round(0.0017 * insured.whole), insured.whole) <= delta / 2
    # It costs what the second look is expected to: as often as the first fails at the plan's rate.
    assert plain.expected < insured.expected < plain.first + (insured.whole - plain.first) / 2
    # Never more than the cap, and no change where the pessimistic rate is not above the plan's.
    capped = plan_looks(size, 0.00036 * size, p_value, delta, 0.0019 * size, 3_000)
    assert capped.whole == 3_000
    assert plan_looks(size, 0.00036 * size, p_value, delta, 0.0001 * size, size // 2) == plain


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(200, 2_000),
    first=st.floats(0.05, 0.3),
    more=st.floats(0.05, 0.4),
    excess=st.integers(1, 15),
    delta=st.sampled_from([0.01, 0.05]),
)
def test_two_looks_pass_a_set_that_misses_its_target_at_most_delta_of_the_time(
    size: int, first: float, more: float, excess: int, delta: float
) -> None:
    """Exactly, over every pair of looks: the first ``n1`` of a uniform sample of ``n2``, each
    tested at ``delta / 2``; the set is wrongly certified if either look passes where its own
    unchecked labels would miss the target."""
    n1 = max(1, int(size * first))
    n2 = min(size - 1, n1 + max(1, int(size * more)))
    allowed1, allowed2 = most_wrong_allowed(0.97, size - n1), most_wrong_allowed(0.97, size - n2)
    wrong = min(size, allowed1 + excess)
    wrongly = 0.0
    for bad1 in range(0, min(wrong, n1) + 1):
        p1 = float(hypergeom.pmf(bad1, size, wrong, n1))
        if p1 == 0:
            continue
        passes1 = wrong - bad1 > allowed1 and unchecked_p_value(bad1, size, n1, allowed1) <= delta / 2
        if passes1:
            wrongly += p1
            continue
        for extra in range(0, min(wrong - bad1, n2 - n1) + 1):
            p2 = float(hypergeom.pmf(extra, size - n1, wrong - bad1, n2 - n1))
            bad2 = bad1 + extra
            if wrong - bad2 > allowed2 and unchecked_p_value(bad2, size, n2, allowed2) <= delta / 2:
                wrongly += p1 * p2
    assert wrongly <= delta + 1e-9


def test_thresholds_keep_their_estimates_inside_the_targets() -> None:
    generator = np.random.default_rng(1)
    logits = np.concatenate([generator.normal(6, 2, 9_000), generator.normal(-6, 2, 91_000)])
    histogram = ScoreHistogram()
    histogram.add(logits)
    assert histogram.total == 100_000
    calibrated = Calibrated(1.0, 0.0)
    chosen = choose(histogram, calibrated, Goals(0.97, 0.995, lose_at_most=50.0))
    assert chosen.high is not None and chosen.low is not None and chosen.low <= chosen.high
    assert chosen.expected_precision is not None and chosen.expected_precision >= 1 - 0.5 * 0.03
    assert chosen.expected_npv is not None and chosen.expected_npv >= 1 - 0.5 * 0.005
    assert chosen.expected_lost <= 50.0
    decisions = decide(logits, chosen.high, chosen.low)
    assert int((decisions == 1).sum()) == chosen.positives and int((decisions == 0).sum()) == chosen.negatives
    # A tight recall allowance moves the low threshold down.
    stricter = choose(histogram, calibrated, Goals(0.97, 0.995, lose_at_most=5.0))
    assert stricter.low is not None and stricter.low < chosen.low and stricter.expected_lost <= 5.0


def test_calibration_is_not_capped_by_smoothing() -> None:
    generator = np.random.default_rng(2)
    labels = (generator.random(400) < 0.1).astype(np.int64)
    logits = np.where(labels == 1, generator.normal(8, 1.5, 400), generator.normal(-8, 1.5, 400))
    calibrated = fit_calibration(logits, labels)
    # 40 positives: Platt's smoothed targets would cap a positive near 41/42; this does not.
    assert calibrated.probability(np.array([10.0]))[0] > 0.999
    assert calibrated.probability(np.array([-10.0]))[0] < 0.001
    assert math.isfinite(calibrated.slope) and calibrated.slope > 0


def new_category(session: Session, name: str) -> Category:
    category = Category(name=name)
    session.add(category)
    session.flush()
    return category


def test_a_side_left_to_people_says_why_in_the_guarantee(tmp_path: Path) -> None:
    # The planner never drops a side silently: status, the demo and the report print the latest
    # round's word on what certifying it would need.
    store = Store.for_project(tmp_path)
    with store.session() as session:
        category = new_category(session, "kitchen")
        notes = [
            "trained on 400 human labels (20 epochs); 9,000 below logit -4 (expected NPV 0.9990, 3 positives)",
            "trained on 800 human labels (25 epochs); no threshold; the model leaves to people: certifying "
            "1,200 auto-positives would need people to check 700 of them",
            None,
        ]
        for number, note in enumerate(notes, start=1):
            session.add(Round(category_id=category.id, number=number, state=RoundState.DONE, notes=note))
    with store.session() as session:
        (certificate,) = certificates(session, ["kitchen"])
    assert certificate.why == (
        "round 2: the model leaves to people: certifying 1,200 auto-positives would need people to check 700 of them"
    )
    assert certificate.describe().endswith(f"every label is people's ({certificate.why})")


def test_the_first_rounds_uniform_sample_bounds_the_categorys_positives(tmp_path: Path) -> None:
    # 40 of a first round's 400 images are people's positives, drawn from a pool of 200,000: the
    # pool holds at least 200,000 times the Clopper-Pearson lower bound at delta positives.
    store = Store.for_project(tmp_path)
    with store.session() as session:
        category = new_category(session, "kitchen")
        first = Round(category_id=category.id, number=1, state=RoundState.DONE, pool_size=200_000)
        session.add(first)
        session.flush()
        items = [Item(sha256=f"{n:064x}", uri=f"/pool/{n}.png", width=8, height=8) for n in range(400)]
        session.add_all(items)
        session.flush()
        session.add_all(RoundItem(round_id=first.id, item_id=item.id, role=ItemRole.TRAIN) for item in items)
        ledger.record_labels(
            session,
            category.id,
            [ledger.NewLabel(item.id, int(n < 40), 0.999) for n, item in enumerate(items[:390])],
            source=LabelSource.HUMAN,
            origin="test",
        )
    with store.session() as session:
        bound = sampled_positives(session, category.id, 0.01)
        assert bound == math.floor(200_000 * beta.ppf(0.01, 40, 361))
        assert 12_000 < bound < 20_000  # 10% found; the bound about 6.8%
        # A tighter level bounds less; a first round that was not a uniform draw bounds nothing.
        assert sampled_positives(session, category.id, 0.001) < bound
        session.execute(update(Round).where(Round.id == first.id).values(human_only=True))
        assert sampled_positives(session, category.id, 0.01) == 0


def test_a_walk_takes_the_rounds_in_order_so_a_later_round_s_errors_cost_only_its_own_labels() -> None:
    """Digit scans: round 5's 12,000 auto-negatives hold 0.2% positives, and round 6's 2,000, made
    from the hardest images left, 2.5% at the same calibrated confidences. By confidence alone the
    walk meets round 6's errors in its first subsets and certifies nothing; round by round, it
    certifies all of round 5 and withdraws round 6."""
    generator = np.random.default_rng(5)
    rounds = 2
    confidence = np.concatenate([generator.uniform(0.997, 1.0, 12_000), generator.uniform(0.997, 1.0, 2_000)])
    position = np.repeat([0, 1], [12_000, 2_000])
    wrong = np.concatenate([generator.random(12_000) < 0.002, generator.random(2_000) < 0.025])
    picked = generator.choice(14_000, 4_000, replace=False)
    side = SideCounts.empty(rounds)
    side.add(confidence, position)
    npv = _p(0.995)
    keys = order_key(position[picked], rounds, _bins(confidence[picked]))
    result = walk(side.subsets(), Checked(keys, wrong[picked]), npv, 0.02, rate=0.002)
    assert result.subset is not None and result.subset.size >= 12_000
    last, bound = split_key(result.subset.bound, rounds)
    assert last == 0 and bound <= confidence[:12_000].min()  # the whole of the first round
    kept = (position < last) | ((position == last) & (confidence >= bound))
    assert kept.sum() == result.subset.size
    by_confidence = SideCounts.empty(1)
    by_confidence.add(confidence, np.zeros(14_000, dtype=np.int64))
    checked = Checked(_bins(confidence[picked]).astype(float), wrong[picked])
    alone = walk(by_confidence.subsets(), checked, npv, 0.02, rate=0.002)
    assert alone.subset is None or alone.subset.size < 6_000


def _fitted(scores: np.ndarray, labels: np.ndarray, fresh: np.ndarray) -> RoundHead:
    return RoundHead(
        None,  # type: ignore[arg-type]  # the head itself is not read
        None,
        Calibrated(1.0, 0.0),
        (0.0, 0.0),
        scores.astype(np.float64),
        labels.astype(np.int64),
        fresh,
    )


def test_a_region_s_error_rate_is_measured_on_labels_drawn_from_the_pool_as_it_is_now() -> None:
    # 40 labels beyond -5 of images the pool still holds, 2 contradicted; 40 more of images an
    # earlier split took, none contradicted.
    scores = np.concatenate([np.full(40, -6.0), np.full(40, -9.0), [5.0]])
    labels = np.concatenate([np.repeat([1, 0], [2, 38]), np.zeros(40), [1]])
    fresh = np.concatenate([np.ones(40, dtype=bool), np.zeros(40, dtype=bool), [True]])
    assert region_rate(_fitted(scores, labels, fresh), 0, -5.0) == pytest.approx(2 / 40)
    assert region_rate(_fitted(scores, labels, np.ones(81, dtype=bool)), 0, -5.0) == pytest.approx(2 / 80)
    # Too few labels there: no rate of its own.
    assert region_rate(_fitted(scores, labels, fresh), 0, -8.0) == 0.0
    assert region_rate(_fitted(scores, labels, fresh), 1, 4.0) == 0.0


def test_a_split_labels_only_as_far_as_certifying_it_saves_people_labels() -> None:
    # 20,000 pool images whose calibrated curve promises a clean negative side down to logit -3,
    # but people's labels from the pool as it is show 3% positives between -7 and -3, and none
    # below -7. Labeling down to -3 would be certified only by checking most of it; the split
    # stops near -7, where the side is clean and its check cheap.
    generator = np.random.default_rng(0)
    pool = np.concatenate(
        [generator.uniform(-12, -7, 12_000), generator.uniform(-7, -3, 6_000), generator.uniform(-3, 3, 2_000)]
    )
    histogram = ScoreHistogram()
    histogram.add(pool)
    labeled = generator.choice(20_000, 3_000, replace=False)
    scores = pool[labeled]
    labels = np.where((scores > -7) & (scores < -3), generator.random(3_000) < 0.03, scores > 0).astype(np.int64)
    fitted = _fitted(scores, labels, np.ones(3_000, dtype=bool))
    goals = Goals(0.97, 0.995, 200.0)
    chosen = choose(histogram, Calibrated(1.0, 0.0), goals)
    assert chosen.low is not None and chosen.low > -7
    cascade = CascadeConfig()

    def negative_cost(size: int, wrong: float) -> float:
        return side_looks(cascade, 0, size, wrong, 0.0225, 180).expected

    costs = {0: negative_cost, 1: lambda size, wrong: side_looks(cascade, 1, size, wrong, 0.0225, -1).expected}
    cut, rates = economical(chosen, histogram, fitted, costs)
    assert cut.low is not None and -7.6 < cut.low <= -6.9
    assert 11_000 < cut.negatives < 12_100 and rates[0] < 0.002
    # Where people's labels agree with the curve, the loosest side stands.
    clean = _fitted(scores, (scores > 0).astype(np.int64), np.ones(3_000, dtype=bool))
    assert economical(chosen, histogram, clean, costs)[0].low == chosen.low


def test_people_contradict_a_model_label_only_by_a_clear_majority_of_the_image_s_votes(tmp_path: Path) -> None:
    # Four checked auto-negatives people labeled positive: by 3 of 3 votes, by 8 of 9, by 6 of 11
    # (good workers split, as on an image that is hard to tell), and by 2 of 3. Only the first two
    # contradict the model; the others have no consensus and count as checked, not wrong. A fifth,
    # people's label agreeing with the model, is untouched.
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    votes = {1: (3, 0), 2: (8, 1), 3: (6, 5), 4: (2, 1), 5: (0, 3)}  # image: (yes, no)
    with store.session() as session:
        cat = category_id(session, "digit")
        session.add_all(Item(id=i, sha256=f"{i:064d}", uri=f"/x/{i}.png", width=8, height=8) for i in votes)
        insert_ignoring_duplicates(session, Worker, [{"platform_worker_id": f"w{w}"} for w in range(11)])
        workers = dict(session.execute(select(Worker.platform_worker_id, Worker.id)).all())
        round_ = Round(category_id=cat, number=1, state="reviewed")
        session.add(round_)
        session.flush()
        hit = Hit(round_id=round_.id, batch_id="r1", hit_key="h0", assignments_requested=11)
        session.add(hit)
        session.flush()
        for worker in range(11):
            assignment = AssignmentRow(
                platform_assignment_id=f"as{worker}",
                hit_id=hit.id,
                worker_id=workers[f"w{worker}"],
                status="approved",
                accepted_at=0.0,
                submitted_at=1.0,
            )
            session.add(assignment)
            session.flush()
            for item, (yes, no) in votes.items():
                if worker < yes + no:
                    answer = 1 if worker < yes else 0
                    session.add(
                        Vote(
                            assignment_id=assignment.id,
                            item_id=item,
                            category_id=cat,
                            worker_id=workers[f"w{worker}"],
                            answer=answer,
                        )
                    )
    people = {1: 1, 2: 1, 3: 1, 4: 1, 5: 0}
    with store.session() as session:
        settled = split_votes_unresolved(session, cat, people, dict.fromkeys(votes, 0))
    assert settled == {1: 1, 2: 1, 3: UNRESOLVED, 4: UNRESOLVED, 5: 0}


def test_a_second_look_is_asked_only_where_the_whole_sample_could_pass() -> None:
    # The rare digit: 7 positives among 6,228 checked of 15,785 auto-negatives (0.013% expected),
    # where the recall test allows 11 among all of them: however clean the other 3,925 checked, the
    # whole sample fails. Two slips among 196 checked of 1,900 auto-positives: with the rest as
    # clean as planned, the whole sample of 395 passes.
    def recall(bad: int, size: int, n: int) -> float:
        return unchecked_p_value(bad, size, n, 11)

    rare = Checked(np.zeros(6_228), np.arange(6_228) < 7)
    assert not could_pass(rare, 3_925, 15_785, recall, 0.02, 2.1 / 15_785)
    slips = Checked(np.zeros(196), np.arange(196) < 2)
    assert could_pass(slips, 199, 1_900, _p(0.97), 0.0034, 0.001)
    assert not could_pass(slips, 199, 1_900, _p(0.97), 0.0034, 0.02)


def test_the_noise_floor_is_the_median_of_the_category_s_rounds_and_sizes_the_second_look(tmp_path: Path) -> None:
    # The common digit's rounds on 20,000 digit scans (seed 0): its final split measured 0.036% on
    # its negatives, the median of its ten rounds 0.19%. Another category's rounds do not count.
    negatives = [0.0009, 0.0015, 0.0022, 0.0008, 0.0044, 0.0102, 0.0032, 0.0199, 0.0011, 0.00036]
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with store.session() as session:
        cat, other = category_id(session, "digit-3"), category_id(session, "digit-7")
        assert noise_floor(session, cat) == (0.0, 0.0)
        for number, rate in enumerate(negatives, start=1):
            for category, scale in ((cat, 1.0), (other, 100.0)):
                round_ = Round(category_id=category, number=number, state="reviewed")
                session.add(round_)
                session.flush()
                session.add(
                    RoundModel(
                        round_id=round_.id,
                        head=b"",
                        calibration_size=0,
                        disagreement=min(rate * scale, 1.0),
                        disagreement_positive=0.01,
                    )
                )
    with store.session() as session:
        floor = noise_floor(session, cat)
    assert floor[0] == pytest.approx(float(np.median(negatives))) and floor[1] == pytest.approx(0.01)
    # A side whose own round measured 0.036%: its plan is as before, its second look is larger.
    size = 15_289
    side = SideCounts.empty(1)
    side.add(np.full(size, 1 - 1e-6), np.zeros(size, dtype=np.int64))
    side.noise[0] = 0.00036
    plain = side_looks(CascadeConfig(), 0, size, side.expected_wrong, 0.038, -1, side.insured_wrong)
    side.floor = floor[0]
    assert side.expected_wrong == pytest.approx(0.00036 * size)
    assert side.insured_wrong == pytest.approx(floor[0] * size)
    insured = side_looks(CascadeConfig(), 0, size, side.expected_wrong, 0.038, -1, side.insured_wrong)
    assert insured.first == plain.first and plain.whole < insured.whole <= size // 2
