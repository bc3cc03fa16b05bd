"""A category's certification round: people check a random sample of the model's labels, once.

When a category's rounds are over (its pool is empty or at the round limit), its model labels not
yet certified are two fixed sets, the auto-positives and the auto-negatives. A certification round
(a round of kind ``certify``) draws a uniform sample of each set, sized from what its test needs
(:func:`lsun_crowd.acceptance.sample_needed`: the set's size, the errors its labels' calibrated
confidences predict, the error budget), withdraws the sampled labels and asks people about those
images, as calibration images: by people alone, up to ``cascade.calibration_max_votes`` votes.
Then (:func:`settle_certification`) each side is walked over nested subsets, round by round and
by confidence within a round (:func:`order_key`, :func:`lsun_crowd.acceptance.walk`): the loosest
subset that passes keeps its model labels, the labels looser than it go back to the pool, and the
sampled images keep people's labels. Where a side's plan has two looks
(:class:`lsun_crowd.acceptance.Looks`), people check the first part of its sample, and the rest
only if the first look does not certify the whole side. The category's rounds go on if the pool
is not empty and rounds are left, and their new labels get a certification of their own, at what
is left of the error budget.

The error budget: ``1 - confidence`` for the category, of which a certification spends
:data:`SPEND_SHARE` of what earlier ones left, split between the two sides where it makes the
sample smallest; the recall slack ``1 - target_recall`` likewise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import beta
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from lsun_crowd import ledger
from lsun_crowd.acceptance import (
    UNRESOLVED,
    Checked,
    Looks,
    PValue,
    Subset,
    WalkResult,
    look_delta,
    most_wrong_allowed,
    nested_subsets,
    plan_looks,
    unchecked_p_value,
    walk,
)
from lsun_crowd.aggregate import is_clear
from lsun_crowd.config import CascadeConfig
from lsun_crowd.context import DONE, SAMPLED, Context, RoundRef, Stream, rng, set_state
from lsun_crowd.ids import certify_origin
from lsun_crowd.publish import lay_out_job
from lsun_crowd.review import human_posterior
from lsun_crowd.schema import (
    CertificationItem,
    Gold,
    GuaranteeSide,
    ItemRole,
    Label,
    LabelCount,
    LabelSource,
    Round,
    RoundItem,
    RoundKind,
    RoundModel,
    RoundState,
    RoundTest,
    Vote,
    Worker,
    utc_now,
)

SPEND_SHARE = 0.9  # of the error budget and recall slack left, what one certification spends
SPLITS = np.linspace(0.1, 0.9, 17)  # shares of a certification's budget the positive side may take
# Confidence bins: 0.01 apart in -log10(1 - confidence), up to 1 - 1e-16.
EDGES = 1 - 10 ** -np.arange(0, 16.005, 0.01)


def _bins(confidences: NDArray[np.float64]) -> NDArray[np.int64]:
    return np.clip(np.searchsorted(EDGES, confidences, side="right") - 1, 0, len(EDGES) - 1)


@dataclass
class SideCounts:
    """One side's model labels to certify, per covered round (earliest first): a histogram of their
    confidences, the errors those confidences predict, and the share of them people's consensus is
    expected to contradict (the round's :attr:`lsun_crowd.schema.RoundModel.disagreement`)."""

    counts: NDArray[np.int64]  # (rounds, bins)
    calibrated: NDArray[np.float64]  # (rounds,): the sum of 1 - confidence
    noise: NDArray[np.float64]  # (rounds,)
    floor: float = 0.0  # the category's median rate of contradiction (noise_floor)

    @classmethod
    def empty(cls, rounds: int) -> SideCounts:
        rows = max(rounds, 1)
        return cls(np.zeros((rows, len(EDGES)), dtype=np.int64), np.zeros(rows), np.zeros(rows))

    @property
    def size(self) -> int:
        return int(self.counts.sum())

    @property
    def expected_wrong(self) -> float:
        """Per round, the most of what its labels' confidences predict and of its measured rate."""
        return self._wrong_at(self.noise)

    @property
    def insured_wrong(self) -> float:
        """:attr:`expected_wrong` at no round's rate below :attr:`floor`: what a second look is sized for."""
        return self._wrong_at(np.maximum(self.noise, self.floor))

    def _wrong_at(self, rates: NDArray[np.float64]) -> float:
        return float(np.maximum(self.calibrated, rates * self.counts.sum(axis=1)).sum())

    def add(self, confidences: NDArray[np.float64], positions: NDArray[np.int64]) -> None:
        np.add.at(self.counts, (positions, _bins(confidences)), 1)
        np.add.at(self.calibrated, positions, 1 - confidences)

    def add_summary(self, size: int, expected_wrong: float) -> None:
        """Labels not stored yet (a split's proposal): counted in the newest round's loosest bin,
        which is all a plan reads of them."""
        self.counts[-1, 0] += size
        self.calibrated[-1] += expected_wrong

    def subsets(self) -> list[Subset]:
        """The nested subsets the walk tests, in :func:`order_key` order: round by round, earliest
        first, and within a round by confidence, strictest first."""
        rounds = len(self.counts)
        bins = np.arange(len(EDGES))[::-1]
        keys = np.concatenate([order_key(position, rounds, bins) for position in range(rounds)])
        ends = frozenset(int(end) for end in np.arange(1, rounds + 1) * len(EDGES) - 1)  # each round whole
        return nested_subsets(keys, self.counts[:, ::-1].reshape(-1).copy(), ends)


def order_key(position: int | NDArray[np.int64], rounds: int, bins: NDArray[np.int64]) -> NDArray[np.float64]:
    """Where a label stands in a certification's walk, higher first: every label of an earlier round
    before any of a later one, and by confidence bin within a round (an integer, so that a subset's
    bound reads back exactly, :func:`split_key`). Each round's split is made from what the earlier
    ones left, the hardest images, by a model whose calibration is fitted on few of them: on 20,000
    digit scans, round 5's auto-negatives held 0.18% positives and rounds 6 to 8's, at the same
    calibrated confidences, 1.1% to 2.8%, so a walk by confidence alone met those first and
    certified none. The order is fixed before anyone looks, as the walk's validity needs."""
    return np.asarray((rounds - 1 - np.asarray(position)) * len(EDGES) + np.asarray(bins), dtype=np.float64)


def split_key(key: float, rounds: int) -> tuple[int, float]:
    """:func:`order_key`'s inverse for a subset's bound: the round's position, and the confidence
    its labels in that round reach."""
    stratum, index = divmod(int(key), len(EDGES))
    return rounds - 1 - stratum, float(EDGES[index])


def covered_rounds(session: Session, category_id: int, before: int) -> list[int]:
    """The split rounds a certification numbered ``before`` covers: those since the last earlier
    certification."""
    last = session.scalar(
        select(func.max(Round.number)).where(
            Round.category_id == category_id, Round.kind == RoundKind.CERTIFY, Round.number < before
        )
    )
    return list(
        session.scalars(
            select(Round.id)
            .where(
                Round.category_id == category_id,
                Round.kind == RoundKind.SPLIT,
                Round.number > (last or 0),
                Round.number < before,
            )
            .order_by(Round.number)
        )
    )


def _side_labels(
    session: Session, category_id: int, rounds: list[int], label: int
) -> Iterator[list[tuple[int, float, int]]]:
    """``(item id, confidence, round id)`` of the side's model labels from ``rounds``, in chunks in
    id order."""
    after = 0
    while True:
        rows = session.execute(
            select(Label.id, Label.item_id, Label.confidence, Label.round_id)
            .where(
                Label.category_id == category_id,
                Label.label == label,
                Label.source == LabelSource.MODEL,
                Label.round_id.in_(rounds),
                Label.id > after,
            )
            .order_by(Label.id)
            .limit(ledger.CHUNK)
        ).all()
        if not rows:
            return
        yield [(int(item), float(confidence), int(round_id or 0)) for _, item, confidence, round_id in rows]
        after = int(rows[-1][0])


def pending(session: Session, category_id: int, before: int) -> int:
    """Model labels a certification numbered ``before`` would cover."""
    rounds = covered_rounds(session, category_id, before)
    if not rounds:
        return 0
    return int(
        session.scalar(
            select(func.count()).where(
                Label.category_id == category_id, Label.source == LabelSource.MODEL, Label.round_id.in_(rounds)
            )
        )
        or 0
    )


@dataclass(frozen=True)
class Budget:
    delta: float  # this certification's error budget, both sides together
    recall_share: float  # the share of the category's positives its auto-negatives may lose (0: none tested)


def budget(session: Session, category_id: int, cascade: CascadeConfig) -> Budget:
    spent = float(
        session.scalar(
            select(func.coalesce(func.sum(RoundTest.delta), 0.0))
            .join(Round, Round.id == RoundTest.round_id)
            .where(Round.category_id == category_id)
        )
        or 0.0
    )
    used = float(
        session.scalar(
            select(func.coalesce(func.sum(RoundTest.recall_slack), 0.0))
            .join(Round, Round.id == RoundTest.round_id)
            .where(
                Round.category_id == category_id,
                RoundTest.side == GuaranteeSide.NEGATIVE,
                RoundTest.threshold.is_not(None),
            )
        )
        or 0.0
    )
    delta = max(0.0, (1 - cascade.confidence) - spent) * SPEND_SHARE
    slack = max(0.0, (1 - cascade.target_recall) - used) * SPEND_SHARE if cascade.target_recall > 0 else 0.0
    return Budget(delta, slack)


def known_positives(session: Session, category_id: int, target_precision: float, model_positives: int) -> int:
    """A lower bound on the category's positives, true whenever every certified precision holds:
    people's positive labels, gold positives, and ``target_precision`` of the model's."""
    human = session.scalar(
        select(LabelCount.count).where(
            LabelCount.category_id == category_id, LabelCount.label == 1, LabelCount.source == LabelSource.HUMAN
        )
    )
    gold = session.scalar(select(func.count()).where(Gold.category_id == category_id, Gold.answer == 1))
    return int(human or 0) + int(gold or 0) + math.floor(target_precision * model_positives)


# Of the negative side's budget, the share that bounds the category's positives from its first
# round's uniform sample (sampled_positives) when the side's recall is tested; the rest is its walk's.
RECALL_BOUND_SHARE = 0.05


def walk_budget(side_delta: float, recall_tested: bool) -> float:
    """What a side's walk may spend of its budget: all of it, but for the share that bounds the
    category's positives where the side's recall is tested."""
    return side_delta * (1 - RECALL_BOUND_SHARE) if recall_tested else side_delta


def sampled_positives(session: Session, category_id: int, delta: float) -> int:
    """A lower bound on the category's positives, true with probability at least ``1 - delta``:
    its first round's sample is a uniform draw from the pool it was drawn from, so the positives
    people found in it bound the pool's by Clopper–Pearson (binomial, conservative for a draw
    without replacement). An image of the sample without a human positive label (a negative, or
    one people could not settle) counts as negative. 0 where the first round was not a uniform draw
    (all of a small pool to people) or predates the pool size being kept.

    Without it the recall test counted only the positives already labeled: where the model's
    positives failed their certification, 200,000 images at 10% positives knew of about 400, so at
    most 36 positives could hide among 169,000 auto-negatives, and those went back to the pool too
    (97% of it unlabeled at the round limit), though they held 166 positives of 20,000."""
    first = session.execute(
        select(Round.id, Round.pool_size).where(
            Round.category_id == category_id,
            Round.number == 1,
            Round.kind == RoundKind.SPLIT,
            Round.human_only.is_(False),
        )
    ).first()
    if first is None or not first.pool_size or delta <= 0:
        return 0
    drawn = int(session.scalar(select(func.count()).where(RoundItem.round_id == first.id)) or 0)
    found = int(
        session.scalar(
            select(func.count())
            .select_from(RoundItem)
            .join(Label, (Label.item_id == RoundItem.item_id) & (Label.category_id == category_id))
            .where(RoundItem.round_id == first.id, Label.source == LabelSource.HUMAN, Label.label == 1)
        )
        or 0
    )
    if drawn == 0 or found == 0:
        return 0
    pool = int(first.pool_size)
    return math.floor(pool * float(beta.ppf(delta, found, drawn - found + 1)))


def certification_positives(
    session: Session, category_id: int, cascade: CascadeConfig, model_positives: int, money: Budget
) -> int:
    """The bound on the category's positives a certification plans its recall test on, with
    ``model_positives`` to certify: :func:`known_positives`, or :func:`sampled_positives` where
    that is larger. (For planning: the negative side's budget is not split yet.)"""
    return max(
        known_positives(session, category_id, cascade.target_precision, model_positives),
        sampled_positives(session, category_id, money.delta * RECALL_BOUND_SHARE / 2),
    )


@dataclass(frozen=True)
class Plan:
    """What a certification asks people for, per side (in one look or two), and at what budget."""

    positive: Looks
    negative: Looks
    delta_positive: float
    delta_negative: float
    recall_most: int  # positives the auto-negatives may hold, as planned (the test uses the count it finds)

    def side(self, label: int) -> Looks:
        return self.positive if label == 1 else self.negative

    @property
    def expected(self) -> float:
        return self.positive.expected + self.negative.expected


def side_looks(
    cascade: CascadeConfig,
    label: int,
    size: int,
    expected_wrong: float,
    delta: float,
    recall_most: int,
    insured_wrong: float = 0.0,
) -> Looks:
    """One side's sample at budget ``delta``: precision for the auto-positives; NPV, and recall
    (at most ``recall_most`` positives among them; -1: not tested) for the auto-negatives. A second
    look is sized for ``insured_wrong`` wrong labels (:attr:`SideCounts.insured_wrong`), up to
    :data:`WORTH` of the side."""
    most = math.floor(WORTH * size)
    if label == 1:
        target = cascade.target_precision
        return plan_looks(
            size,
            expected_wrong,
            lambda bad, n: unchecked_p_value(bad, size, n, most_wrong_allowed(target, size - n)),
            delta,
            insured_wrong,
            most,
        )

    def p_value(bad: int, n: int) -> float:
        npv = unchecked_p_value(bad, size, n, most_wrong_allowed(cascade.target_npv, size - n))
        if recall_most < 0:
            return npv
        return max(npv, unchecked_p_value(bad, size, n, recall_most))

    return plan_looks(size, expected_wrong, p_value, walk_budget(delta, recall_most >= 0), insured_wrong, most)


def plan(cascade: CascadeConfig, sides: dict[int, SideCounts], money: Budget, positives_known: int) -> Plan:
    """Sample sizes for both sides, at the split of the budget between them that needs the fewest."""
    positive, negative = sides[1], sides[0]
    recall_most = math.floor(money.recall_share * positives_known) if money.recall_share > 0 else -1
    best: Plan | None = None
    shares = [1.0] if negative.size == 0 else [0.0] if positive.size == 0 else SPLITS.tolist()
    for share in shares:
        delta_positive, delta_negative = money.delta * share, money.delta * (1 - share)
        candidate = Plan(
            side_looks(
                cascade, 1, positive.size, positive.expected_wrong, delta_positive, recall_most, positive.insured_wrong
            ),
            side_looks(
                cascade, 0, negative.size, negative.expected_wrong, delta_negative, recall_most, negative.insured_wrong
            ),
            delta_positive,
            delta_negative,
            recall_most,
        )
        if best is None or candidate.expected < best.expected:
            best = candidate
    assert best is not None
    return best


SideCost = Callable[[int, float], float]  # (labels added, their expected wrong) -> checks added


def side_costs(
    session: Session,
    category_id: int,
    number: int,
    cascade: CascadeConfig,
    positives: float,
    replacing: bool = False,
) -> dict[int, SideCost]:
    """What adding labels to each side of the category's next certification costs in people's
    checks, beside the side's labels not certified yet (none where the split is ``replacing``
    them): for a split choosing how far to label. Planned at half the certification's budget (the
    plan splits it where the sample is smallest)."""
    rounds = covered_rounds(session, category_id, number + 1)
    sides = _count_sides(session, category_id, rounds, replacing=replacing)
    money = budget(session, category_id, cascade)
    known = (
        certification_positives(session, category_id, cascade, 0, money)
        if replacing
        else max(known_positives(session, category_id, cascade.target_precision, 0), math.floor(positives))
    )
    recall_most = math.floor(money.recall_share * known) if money.recall_share > 0 else -1
    delta = money.delta / 2

    def cost_of(label: int) -> SideCost:
        side = sides[label]
        looks = side_looks(cascade, label, side.size, side.expected_wrong, delta, recall_most)
        before = looks.expected if side.size else 0.0

        def cost(size: int, wrong: float) -> float:
            total, expected = side.size + size, side.expected_wrong + wrong
            return side_looks(cascade, label, total, expected, delta, recall_most).expected - before

        return cost

    return {label: cost_of(label) for label in (1, 0)}


def crowd_noise(session: Session, category_id: int) -> tuple[float, float]:
    """The shares of checked negatives and positives people's consensus is expected to contradict,
    as the latest round measured them where its split labels (:func:`lsun_crowd.autolabel.economical`,
    kept as :attr:`lsun_crowd.schema.RoundModel.disagreement`); :func:`_count_sides` reads each
    round's own, and this where a round has none. A plan on the calibrated confidences alone
    failed twice: on 2 crowd slips among 171 checked positives, and on 15 wrong among 692 checked
    digit-3 positives where it expected 6; a failed set goes back to the pool whole."""
    found = session.execute(
        select(RoundModel.disagreement, RoundModel.disagreement_positive)
        .join(Round, Round.id == RoundModel.round_id)
        .where(Round.category_id == category_id, RoundModel.disagreement.is_not(None))
        .order_by(Round.number.desc())
        .limit(1)
    ).first()
    if found is None:
        return (0.0, 0.0)
    return (float(found[0] or 0.0), float(found[1] or 0.0))


def _count_sides(
    session: Session,
    category_id: int,
    rounds: list[int],
    newest: tuple[float, float] | None = None,
    replacing: bool = False,
) -> dict[int, SideCounts]:
    """Both sides' labels from ``rounds``, each round with its measured rate of contradiction
    (``newest`` for a round with no model stored yet, the one being split; else the latest).
    ``replacing``: none of the labels (a final split replaces them), and ``newest`` for the
    latest round, whose model is fitted again."""
    sides = _empty_sides(len(rounds))
    position = round_positions(rounds)
    for label, side in ({} if replacing else sides).items():
        for rows in _side_labels(session, category_id, rounds, label):
            side.add(
                np.array([confidence for _, confidence, _ in rows]),
                np.array([position[round_id] for _, _, round_id in rows], dtype=np.int64),
            )
    measured = {
        int(round_id): (float(negative or 0.0), float(positive or 0.0))
        for round_id, negative, positive in session.execute(
            select(RoundModel.round_id, RoundModel.disagreement, RoundModel.disagreement_positive).where(
                RoundModel.round_id.in_(rounds)
            )
        )
    }
    if replacing and newest is not None and rounds:
        measured.pop(rounds[-1], None)
    floor = noise_floor(session, category_id)
    for label, side in sides.items():
        side.floor = floor[label]
    for index, round_id in enumerate(rounds):
        rates = measured.get(round_id)
        if rates is None:  # the round being split: its own rate, or else the latest
            newest = rates = newest if newest is not None else crowd_noise(session, category_id)
        for label, side in sides.items():
            side.noise[index] = rates[label]
    return sides


def noise_floor(session: Session, category_id: int) -> tuple[float, float]:
    """The median over the category's rounds of the share of sure labels people contradicted
    (negatives, positives). One round's rate rests on the few sure labels it holds: on 20,000
    digit scans, the round that made the common digit's final split measured 0.036% on its
    negatives, where the category's rounds' median was 0.19%; its certification, planned on the
    lower rate, met 3 contradicted labels among 1,816 checked (0.17%) and certified none of
    15,289, where about 2,500 checks would have. A second look is sized for this rate."""
    rows = session.execute(
        select(RoundModel.disagreement, RoundModel.disagreement_positive)
        .join(Round, Round.id == RoundModel.round_id)
        .where(Round.category_id == category_id, RoundModel.disagreement.is_not(None))
    ).all()
    if not rows:
        return (0.0, 0.0)
    middle = np.median(
        np.array([[float(negative or 0.0), float(positive or 0.0)] for negative, positive in rows]), axis=0
    )
    return (float(middle[0]), float(middle[1]))


def round_positions(rounds: list[int]) -> dict[int, int]:
    """Each covered round's position among ``rounds`` (earliest first), by its id."""
    return {round_id: position for position, round_id in enumerate(rounds)}


WORTH = 0.5  # a side whose certification would check this share of its labels is left to people


def not_worth_certifying(
    session: Session,
    category_id: int,
    number: int,
    cascade: CascadeConfig,
    proposed: dict[int, tuple[int, float]],
    noise: tuple[float, float] | None = None,
    expected_positives: float = 0.0,
    replacing: bool = False,
) -> dict[int, str]:
    """The sides of round ``number``'s proposed split (label -> count and expected wrong) whose
    certification, with the category's labels still uncertified, would have people check at least
    :data:`WORTH` of them: the model should leave those to people. Each with the reason, which
    names the labels certification would need.

    ``expected_positives`` is the split's estimate of the category's positives, those still in the
    pool included. The recall test counts only the positives known when it runs (after the rounds,
    when people or the model have labeled most of the pool), so a plan that counted only those
    known today would hold the first rounds' auto-negatives to a handful of positives: on 20,000
    digit scans at 11%, 4 among 9,199, and the model labeled nothing. ``replacing``: the split
    replaces the labels not certified yet (:func:`lsun_crowd.autolabel.final_split`)."""
    rounds = covered_rounds(session, category_id, number + 1)
    sides = _count_sides(session, category_id, rounds, noise, replacing)
    for label, (size, wrong) in proposed.items():
        sides[label].add_summary(size, wrong)
    money = budget(session, category_id, cascade)
    if replacing:  # just before the certification: the bound it will plan on
        positives = certification_positives(session, category_id, cascade, sides[1].size, money)
    else:
        known = known_positives(session, category_id, cascade.target_precision, sides[1].size)
        positives = max(known, math.floor(expected_positives))
    sizes = plan(cascade, sides, money, positives)
    found = {}
    for label, name in ((1, "auto-positives"), (0, "auto-negatives")):
        size = sides[label].size
        if proposed.get(label, (0, 0.0))[0] and sizes.side(label).expected >= WORTH * size:
            found[label] = _too_dear(size, name, sizes.side(label))
    return found


def net_labels(
    session: Session,
    category_id: int,
    number: int,
    cascade: CascadeConfig,
    proposed: dict[int, tuple[int, float]] | None,
    noise: tuple[float, float] | None,
) -> float:
    """The model labels the category's next certification is expected to keep, less the labels
    people check for it: of the labels not certified yet, or (``proposed``: label -> count and
    expected wrong, at the rates ``noise``) of a split that replaces them. A side whose
    certification would check :data:`WORTH` of it or more counts nothing (people label it)."""
    rounds = covered_rounds(session, category_id, number + 1)
    sides = _count_sides(session, category_id, rounds, noise, replacing=proposed is not None)
    for label, (size, wrong) in (proposed or {}).items():
        sides[label].add_summary(size, wrong)
    money = budget(session, category_id, cascade)
    sizes = plan(cascade, sides, money, certification_positives(session, category_id, cascade, sides[1].size, money))
    net = 0.0
    for label in (1, 0):
        size, checks = sides[label].size, sizes.side(label).expected
        if size and checks < WORTH * size:
            net += size - checks
    return net


def _too_dear(size: int, name: str, looks: Looks) -> str:
    return f"certifying {size:,} {name} would need people to check {min(round(looks.expected), size):,} of them"


def _empty_sides(rounds: int) -> dict[int, SideCounts]:
    return {label: SideCounts.empty(rounds) for label in (1, 0)}


def sample_certification(ctx: Context, category: str, category_id: int, number: int) -> Round | None:
    """Round ``number``: a certification of the model labels since the last one, with its sample
    drawn (from the seed alone), the sampled labels withdrawn and its first job laid out, in one
    transaction. ``None`` when there is nothing to certify."""
    cascade = ctx.config.cascade
    with ctx.stages.timed("sample", number), ctx.store.session() as session:
        rounds = covered_rounds(session, category_id, number)
        sides = _count_sides(session, category_id, rounds)
        if sides[1].size + sides[0].size == 0:
            return None
        money = budget(session, category_id, cascade)
        # (For planning: the negative side's budget is not split yet; its test uses its own.)
        positives = certification_positives(session, category_id, cascade, sides[1].size, money)
        sizes = plan(cascade, sides, money, positives)
        for label, name in ((1, "auto-positives"), (0, "auto-negatives")):
            size = sides[label].size
            if size and sizes.side(label).expected >= WORTH * size:
                # Checking most of a side to certify the rest costs what people labeling it does:
                # its labels go back to the pool, for people (and the category says so).
                reason = _too_dear(size, name, sizes.side(label))
                labels = (Label.label == label) & (Label.source == LabelSource.MODEL) & Label.round_id.in_(rounds)
                ledger.withdraw_labels(
                    session, category_id, labels, origin=certify_origin(f"r{number}", "left"), reason=reason
                )
                ctx.progress.message(f"{category}: round {number}: {reason}: they go back to people")
                sides[label] = SideCounts.empty(len(rounds))
        if sides[1].size + sides[0].size == 0:
            return None
        sizes = plan(cascade, sides, money, positives)
        round_ = Round(category_id=category_id, number=number, state=RoundState.SAMPLED, kind=RoundKind.CERTIFY)
        session.add(round_)
        session.flush()
        chosen: list[int] = []
        for label in (1, 0):
            generator = rng(ctx.config.project.seed, category_id, number, Stream.CERTIFY_SAMPLE, label)
            size, looks = sides[label].size, sizes.side(label)
            chosen += _draw_side(session, category_id, round_.id, rounds, label, size, looks, generator)
        _ask_people(session, category_id, round_.id, chosen, f"drawn for certification round {number}: people check it")
        _plan_tests(session, round_.id, cascade, sides, sizes, money)
        ref = RoundRef(category, category_id, round_)
        lay_out_job(ctx, session, ref, chosen, follow_up=0, assignments=ctx.config.crowd.votes_per_item)
    ctx.progress.message(f"{category}: round {number}: certification; {describe_plan(sides, sizes)}")
    return round_


def _draw_side(
    session: Session,
    category_id: int,
    round_id: int,
    rounds: list[int],
    label: int,
    size: int,
    looks: Looks,
    generator: np.random.Generator,
) -> list[int]:
    """Draw one side's sample and store it (each label with its look); returns the first look's
    images. One uniform sample of the whole: its first draws are the first look's, a uniform
    sample too."""
    drawn = generator.choice(size, size=min(looks.whole, size), replace=False)
    order = np.argsort(drawn)
    picked = _pick(session, category_id, rounds, label, drawn[order])
    look = np.where(order < looks.first, 1, 2)
    session.add_all(
        CertificationItem(
            round_id=round_id,
            item_id=item,
            label=label,
            confidence=confidence,
            model_round_id=model_round,
            look=int(seen),
        )
        for (item, confidence, model_round), seen in zip(picked, look.tolist(), strict=True)
    )
    return [item for (item, _, _), seen in zip(picked, look.tolist(), strict=True) if seen == 1]


def _plan_tests(
    session: Session, round_id: int, cascade: CascadeConfig, sides: dict[int, SideCounts], sizes: Plan, money: Budget
) -> None:
    """Record each side's test as planned. Its budget is fixed now, before anyone looks: spent from
    here on."""
    for side, delta, count, slack in (
        (GuaranteeSide.POSITIVE, sizes.delta_positive, sides[1].size, None),
        (GuaranteeSide.NEGATIVE, sizes.delta_negative, sides[0].size, money.recall_share or None),
    ):
        session.add(
            RoundTest(
                round_id=round_id,
                side=side,
                mode="accept",
                threshold=None,
                target=cascade.target_precision if side == GuaranteeSide.POSITIVE else cascade.target_npv,
                delta=delta if count else 0.0,
                recall_slack=slack,
                calibration_size=0,
            )
        )


def describe_plan(sides: dict[int, SideCounts], sizes: Plan) -> str:
    parts = []
    for name, label in (("auto-positives", 1), ("auto-negatives", 0)):
        size, looks = sides[label].size, sizes.side(label)
        if size == 0:
            continue
        whole = " (all of them: too few for a sample to prove anything)" if looks.first >= size else ""
        more = f", then {looks.whole - looks.first:,} more if those do not certify them all" if looks.two else ""
        parts.append(f"people check {min(looks.first, size):,} of {size:,} {name}{whole}{more}")
    return "; ".join(parts)


def _pick(
    session: Session, category_id: int, rounds: list[int], label: int, positions: NDArray[np.int64]
) -> list[tuple[int, float, int]]:
    """``(item, confidence, round id)`` of the side's labels at sorted ``positions`` of id order."""
    found: list[tuple[int, float, int]] = []
    offset = cursor = 0
    for rows in _side_labels(session, category_id, rounds, label):
        if cursor == len(positions):
            break
        end = offset + len(rows)
        while cursor < len(positions) and positions[cursor] < end:
            found.append(rows[int(positions[cursor]) - offset])
            cursor += 1
        offset = end
    return found


def people_labels(ctx: Context, session: Session, ref: RoundRef, items: list[int]) -> dict[int, int]:
    """People's label for each sampled image: its human label, or for an image that reached its
    vote cap below the label bar, its votes' consensus if that is at least
    ``cascade.calibration_consensus`` sure; :data:`UNRESOLVED` otherwise."""
    labels = {item: UNRESOLVED for item in items}
    for batch in ledger.chunks(items):
        for item, label in session.execute(
            select(Label.item_id, Label.label).where(
                Label.category_id == ref.category_id,
                Label.source == LabelSource.HUMAN,
                Label.item_id.in_(list(batch)),
            )
        ):
            labels[int(item)] = int(label)
    if all(label != UNRESOLVED for label in labels.values()):
        return labels
    posterior = human_posterior(session, ref.category_id, ctx.config.quality)
    if posterior is None:
        return labels
    winners, certainty, majority = posterior.labels(), posterior.confidence(), posterior.clear_majority()
    bar = ctx.config.cascade.calibration_consensus
    position = {item: index for index, item in enumerate(posterior.items)}
    for item, label in labels.items():
        index = position.get(item)
        if label != UNRESOLVED or index is None or certainty[index] < bar:
            continue
        if majority[index] < 0 or majority[index] == winners[index]:  # never against a clear majority
            labels[item] = int(winners[index])
    return labels


def split_votes_unresolved(
    session: Session, category_id: int, people: dict[int, int], model: dict[int, int]
) -> dict[int, int]:
    """``people`` (each sampled image's label by people), with :data:`UNRESOLVED` where people's
    label contradicts the model's (``model``) but the image's own votes show no clear majority for
    it (:func:`lsun_crowd.aggregate.is_clear`: all of two or more, or 80% of five or more): where
    good workers split, 6 of 11 votes against 5, there is no consensus to
    contradict the model, as for an image left unresolved at the vote cap. On 20,000 digit scans,
    such splits were 3 of the 6 contradicted labels among 1,788 checked auto-negatives of the
    common digit and 10 of 17 among 10,153 of the rare one, all of images that are not the digit."""
    contradicted = [item for item, label in people.items() if label != UNRESOLVED and label != model.get(item, label)]
    counts: dict[int, dict[int, int]] = {}
    for batch in ledger.chunks(contradicted):
        for item, answer, voters in session.execute(
            select(Vote.item_id, Vote.answer, func.count(func.distinct(Vote.worker_id)))
            .join(Worker, Worker.id == Vote.worker_id)
            .where(
                Vote.category_id == category_id,
                Vote.item_id.in_(list(batch)),
                Vote.is_gold.is_(False),
                Worker.blocked.is_(False),
            )
            .group_by(Vote.item_id, Vote.answer)
        ):
            counts.setdefault(int(item), {})[int(answer)] = int(voters)
    agreeing = np.array([counts.get(item, {}).get(people[item], 0) for item in contradicted], dtype=np.float64)
    totals = np.array([sum(counts.get(item, {}).values()) for item in contradicted], dtype=np.float64)
    settled = dict(people)
    for item, clear in zip(contradicted, is_clear(agreeing, totals).tolist(), strict=True):
        if not clear:
            settled[item] = UNRESOLVED
    return settled


@dataclass(frozen=True)
class _Sampled:
    item: int
    label: int  # the model's
    confidence: float
    model_round: int  # the split round whose label it is
    look: int
    asked: bool  # its look has begun: its model label is withdrawn and people are asked


def _sampled(session: Session, round_id: int) -> list[_Sampled]:
    """The certification's sample (one row per drawn label: it grows with the sample, not the pool)."""
    rows = session.execute(
        select(
            CertificationItem.item_id,
            CertificationItem.label,
            CertificationItem.confidence,
            CertificationItem.model_round_id,
            CertificationItem.look,
            RoundItem.item_id.is_not(None),
        )
        .outerjoin(
            RoundItem,
            (RoundItem.round_id == CertificationItem.round_id) & (RoundItem.item_id == CertificationItem.item_id),
        )
        .where(CertificationItem.round_id == round_id)
    ).all()
    return [
        _Sampled(int(item), int(label), float(conf), int(model_round), int(look), bool(asked))
        for item, label, conf, model_round, look, asked in rows
    ]


POSITIVE, NEGATIVE = GuaranteeSide.POSITIVE, GuaranteeSide.NEGATIVE
SIDE_NAMES = {1: "auto-positives", 0: "auto-negatives"}


def settle_certification(ctx: Context, ref: RoundRef) -> str:
    """Test each side on what people said of its sample, withdraw what fails, record the test; or,
    where a side planned two looks and its first did not certify the whole side, start its second
    look (:class:`lsun_crowd.acceptance.Looks`). The negative side waits for the positive side's
    final count, which bounds its recall test. One transaction."""
    cascade = ctx.config.cascade
    with ctx.store.session() as session:
        rounds = covered_rounds(session, ref.category_id, ref.number)
        sampled = _sampled(session, ref.id)
        people = people_labels(ctx, session, ref, [row.item for row in sampled if row.asked])
        people = split_votes_unresolved(session, ref.category_id, people, {row.item: row.label for row in sampled})
        sides = _population(session, ref.category_id, rounds, sampled)
        tests = {row.side: row for row in session.scalars(select(RoundTest).where(RoundTest.round_id == ref.id))}
        # The errors the plan expected, as a share of each side (its labels' confidences, the
        # sample included, and people's slips): where each walk starts.
        rate = {label: sides[label].expected_wrong / max(sides[label].size, 1) for label in (1, 0)}
        settled = {label for label, side in ((1, POSITIVE), (0, NEGATIVE)) if tests[side].calibration_size > 0}
        second: list[int] = []
        for label, side in ((1, POSITIVE), (0, NEGATIVE)):
            mine = [row for row in sampled if row.label == label]
            if label in settled or (label == 0 and 1 not in settled and any(row.label == 1 for row in sampled)):
                continue  # settled already; or the negatives wait for the positives' final count
            asked = [row for row in mine if row.asked]
            two = any(row.look == 2 for row in mine)
            checked = _checked(asked, people, label, rounds)
            p_value = _p_value(session, ref, cascade, label, tests)
            delta = look_delta(walk_budget(tests[side].delta, label == 0 and bool(tests[side].recall_slack)), two)
            result = walk(sides[label].subsets(), checked, p_value, delta, rate[label])
            certified = result.subset.size if result.subset is not None else 0
            waiting = [row.item for row in mine if not row.asked]
            if (
                waiting
                and sides[label].size - certified >= len(waiting)
                and could_pass(checked, len(waiting), sides[label].size, p_value, delta, rate[label])
            ):
                # Worth a second look: more labels stand to be kept than people would check.
                second.append(label)
                ctx.progress.message(
                    f"{ref.category}: round {ref.number}: the first look certified {certified:,} of "
                    f"{sides[label].size:,} {SIDE_NAMES[label]}; people check {len(waiting):,} more"
                )
                continue
            tests[side] = _record_side(session, ref, rounds, label, tests[side], result, asked, people)
            settled.add(label)
        if any(row.label not in settled for row in sampled):
            return _second_look(
                ctx, session, ref, [row.item for row in sampled if row.label in second and not row.asked]
            )
        note = (
            f"certified {tests[POSITIVE].labeled:,} auto-positive(s) ({_describe(tests[POSITIVE])}) and "
            f"{tests[NEGATIVE].labeled:,} auto-negative(s) ({_describe(tests[NEGATIVE])})"
        )
        state = set_state(session, ref, DONE, finished_at=utc_now(), notes=note)
    ctx.progress.message(f"{ref.category}: round {ref.number}: {note}")
    return state


def _population(
    session: Session, category_id: int, rounds: list[int], sampled: list[_Sampled]
) -> dict[int, SideCounts]:
    """Both sides' labels as the certification drew its sample from them: those left, and the
    sampled labels people are asked about (withdrawn while they are)."""
    sides = _count_sides(session, category_id, rounds)
    position = round_positions(rounds)
    for label in (1, 0):
        asked_here = [row for row in sampled if row.label == label and row.asked]
        sides[label].add(
            np.array([row.confidence for row in asked_here]),
            np.array([position[row.model_round] for row in asked_here], dtype=np.int64),
        )
    return sides


def _checked(asked: list[_Sampled], people: dict[int, int], label: int, rounds: list[int]) -> Checked:
    """What people said of a side's checked labels, in the walk's order. Wrong: people's consensus
    contradicts the model. An image people could not settle has no consensus to contradict it: it
    counts as checked, not as wrong (docs/guarantees.md)."""
    position = round_positions(rounds)
    return Checked(
        order_key(
            np.array([position[row.model_round] for row in asked], dtype=np.int64),
            len(rounds),
            _bins(np.array([row.confidence for row in asked], dtype=np.float64)),
        ),
        np.array([people[row.item] not in (label, UNRESOLVED) for row in asked], dtype=bool),
    )


def _record_side(
    session: Session,
    ref: RoundRef,
    rounds: list[int],
    label: int,
    planned: RoundTest,
    result: WalkResult,
    asked: list[_Sampled],
    people: dict[int, int],
) -> RoundTest:
    """A settled side: its labels looser than what the walk certified withdrawn, and its test
    recorded over the plan's row (``planned``)."""
    kept = _withdraw_looser(session, ref, rounds, label, result)
    return session.merge(
        RoundTest(
            round_id=ref.id,
            side=planned.side,
            mode="accept",
            threshold=split_key(result.subset.bound, len(rounds))[1] if result.subset is not None else None,
            target=planned.target,
            delta=planned.delta if asked else 0.0,
            recall_slack=planned.recall_slack,
            calibration_size=len(asked),
            unresolved=sum(people[row.item] == UNRESOLVED for row in asked),
            tested=result.sampled,
            errors=result.bad,
            p_value=result.p_value,
            bound=None,
            labeled=kept,
        )
    )


def could_pass(checked: Checked, more: int, size: int, p_value: PValue, delta: float, rate: float) -> bool:
    """Whether a side's whole sample, its first look (``checked``) and ``more`` labels still to
    check, could pass as a whole where the rest is as clean as the plan expected (``rate`` of it
    wrong; rounded): a second look that could not is not asked for. On 20,000 digit scans at 1%, a
    first look found 7 positives among 6,228 checked auto-negatives, where the recall test allowed
    11 among all of them, and the second look's 3,925 checks certified nothing. (At the first
    look's own rate, two slips among 196 checked auto-positives of a simulated pool ruled out a
    second look that would have certified 1,520 of them.) Whether the second look runs depends only
    on the first, and its budget is spent either way, so the test's level is as before."""
    expected = int(checked.bad.sum()) + round(rate * more)
    return p_value(expected, size, len(checked.bad) + more) <= delta


def _p_value(
    session: Session, ref: RoundRef, cascade: CascadeConfig, label: int, tests: dict[str, RoundTest]
) -> PValue:
    """A side's test: precision for the auto-positives; NPV and recall for the auto-negatives,
    recall against the positives known now (people's, gold, and the certified model positives)."""
    if label == 1:
        precision = cascade.target_precision
        return lambda bad, size, n: unchecked_p_value(bad, size, n, most_wrong_allowed(precision, size - n))
    share = tests[NEGATIVE].recall_slack or 0.0
    model_positives = session.scalar(
        select(LabelCount.count).where(
            LabelCount.category_id == ref.category_id, LabelCount.label == 1, LabelCount.source == LabelSource.MODEL
        )
    )
    known = max(
        known_positives(session, ref.category_id, cascade.target_precision, int(model_positives or 0)),
        sampled_positives(session, ref.category_id, tests[NEGATIVE].delta * RECALL_BOUND_SHARE),
    )
    recall_most = math.floor(share * known) if share > 0 else -1
    npv = cascade.target_npv

    def p_negative(bad: int, size: int, n: int) -> float:
        value = unchecked_p_value(bad, size, n, most_wrong_allowed(npv, size - n))
        return value if recall_most < 0 else max(value, unchecked_p_value(bad, size, n, recall_most))

    return p_negative


def _second_look(ctx: Context, session: Session, ref: RoundRef, items: list[int]) -> str:
    """People check the rest of a side's sample: its labels withdrawn, a job of the round laid out."""
    reason = f"drawn for certification round {ref.number}, second look: people check it"
    _ask_people(session, ref.category_id, ref.id, items, reason)
    follow_up = int(session.scalar(select(Round.follow_up).where(Round.id == ref.id)) or 0) + 1
    lay_out_job(ctx, session, ref, items, follow_up, ctx.config.crowd.votes_per_item)
    session.execute(update(Round).where(Round.id == ref.id).values(follow_up=follow_up))
    return set_state(session, ref, SAMPLED)


def _ask_people(session: Session, category_id: int, round_id: int, items: list[int], reason: str) -> None:
    """Sampled labels go to people: the images become the round's calibration images, and their
    model labels are withdrawn while people check them."""
    session.add_all(RoundItem(round_id=round_id, item_id=item, role=ItemRole.CALIBRATION) for item in items)
    session.flush()
    for batch in ledger.chunks(items):
        ledger.withdraw_labels(
            session,
            category_id,
            Label.item_id.in_(list(batch)) & (Label.source == LabelSource.MODEL),
            origin=certify_origin(round_id, "sample"),
            reason=reason,
        )


def _describe(test: RoundTest) -> str:
    if test.threshold is None:
        return f"none passed on {test.calibration_size} checked"
    return f"{test.errors} wrong of {test.tested} checked in the subset, p = {test.p_value or 0:.2g}"


def _withdraw_looser(session: Session, ref: RoundRef, rounds: list[int], label: int, result: WalkResult) -> int:
    """Withdraw the side's model labels from ``rounds`` looser than the certified subset (all of
    them when none passed): those of later rounds than its last, and those of its last round below
    its confidence bound. Returns how many stay."""
    side = (Label.label == label) & (Label.source == LabelSource.MODEL) & Label.round_id.in_(rounds)
    if result.subset is None:
        looser = side
    else:
        position, bound = split_key(result.subset.bound, len(rounds))
        later = rounds[position + 1 :]
        looser = side & (
            ((Label.round_id == rounds[position]) & (Label.confidence < bound)) | Label.round_id.in_(later)
        )
    reason = "certification: " + ("no subset passed" if result.subset is None else "looser than the certified subset")
    ledger.withdraw_labels(session, ref.category_id, looser, origin=certify_origin(ref.id), reason=reason)
    return int(session.scalar(select(func.count()).where(Label.category_id == ref.category_id, side)) or 0)
