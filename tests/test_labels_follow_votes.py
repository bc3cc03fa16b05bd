"""No human label goes against a clear majority of its own votes, whatever the model says.

The cascade's path from votes to a human label: gold-anchored Dawid–Skene over the category's votes
(:func:`lsun_crowd.review.human_posterior`), the previous round's model as one more annotator
bounded by one good worker's vote (:func:`lsun_crowd.consensus.with_model`), and the labeling rule
(:func:`lsun_crowd.review.decide_labels`). A certification's capped images go through the same
clear-majority rule (:func:`lsun_crowd.certify.people_labels`).
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lsun_crowd.aggregate import Posterior, Votes
from lsun_crowd.consensus import evidence_bound, model_share, with_model
from lsun_crowd.dawid_skene import dawid_skene
from lsun_crowd.review import decide_labels

BAR = 0.997
GOOD_WORKERS = [f"good{index}" for index in range(6)]
GOLD = 40  # gold images every good worker answered right: their good record


def _posterior(votes: list[list[int]], base_positive: bool) -> tuple[Posterior, list[int]]:
    """Dawid–Skene over a round's images (ids 0..n-1) voted on by good workers, beside gold images
    each of them got right; the gold is mostly one class, like a category at a low base rate."""
    triples: list[tuple[int, str, int]] = []
    for item, answers in enumerate(votes):
        triples += [(item, GOOD_WORKERS[position], answer) for position, answer in enumerate(answers)]
    known: dict[int, int] = {}
    gold_ids = []
    for number in range(GOLD):
        item = 10_000 + number
        truth = int((number % 10 == 0) != base_positive)  # a tenth of one class, the rest the other
        gold_ids.append(item)
        triples += [(item, worker, truth) for worker in GOOD_WORKERS]
        known[item] = truth
    table = Votes.from_triples(triples, classes=(0, 1))
    index = {item: position for position, item in enumerate(table.items)}
    posterior = dawid_skene(table, {index[item]: answer for item, answer in known.items()}, 4.0, 1.0, device="cpu")
    return posterior, list(range(len(votes)))


def _clear(answers: list[int]) -> int | None:
    if not answers:
        return None
    yes = sum(answers)
    if len(answers) >= 2 and yes in (0, len(answers)):
        return int(yes > 0)
    if len(answers) >= 5 and max(yes, len(answers) - yes) >= 0.8 * len(answers):
        return int(yes * 2 > len(answers))
    return None


votes_of_an_image = st.lists(st.integers(0, 1), min_size=0, max_size=6)


@settings(max_examples=150, deadline=None)
@given(
    round_votes=st.lists(votes_of_an_image, min_size=1, max_size=12),
    scores=st.lists(
        st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([-1e300, 1e300, 0.0])),
        min_size=12,
        max_size=12,
    ),
    base_positive=st.booleans(),
)
def test_no_label_goes_against_a_clear_majority_of_good_workers(
    round_votes: list[list[int]], scores: list[float], base_positive: bool
) -> None:
    posterior, round_items = _posterior(round_votes, base_positive)
    evidence = np.zeros(len(posterior.items))
    position = {item: index for index, item in enumerate(posterior.items)}
    for item in round_items:
        if item in position:
            evidence[position[item]] = scores[item]
    bound = evidence_bound(posterior)
    bounded = np.clip(evidence, -bound, bound)
    decided = decide_labels(with_model(posterior, bounded), set(round_items), BAR, 2, {}, bounded)
    for label in decided.labels:
        clear = _clear(round_votes[label.item_id])
        assert clear is None or label.label == clear, (round_votes[label.item_id], scores[label.item_id], label)
        assert -1.0 <= label.model_share <= 1.0


@settings(max_examples=60, deadline=None)
@given(score=st.floats(-1e6, 1e6, allow_nan=False), answer=st.integers(0, 1), base_positive=st.booleans())
def test_a_one_image_round_with_two_unanimous_votes_gets_their_label_or_more_votes(
    score: float, answer: int, base_positive: bool
) -> None:
    # The trial's case: a round of one image, two unanimous votes, a model sure of the opposite.
    posterior, items = _posterior([[answer, answer]], base_positive)
    evidence = np.where(np.array([item == 0 for item in posterior.items]), score, 0.0)
    bound = evidence_bound(posterior)
    decided = decide_labels(with_model(posterior, evidence, bound), set(items), BAR, 2, {}, evidence)
    assert all(label.label == answer for label in decided.labels)


def test_the_model_is_worth_one_good_vote_at_most() -> None:
    posterior, _ = _posterior([[1, 1], [1]], base_positive=False)
    bound = evidence_bound(posterior)
    assert 2.0 < bound <= math.log(0.99 / 0.01)
    # An extreme score moves an image's log-odds by the bound, no more.
    round_rows = [index for index, item in enumerate(posterior.items) if item in (0, 1)]
    before = posterior.probabilities[round_rows, 1]
    after = with_model(posterior, np.full(len(posterior.items), -1e9), bound).probabilities[round_rows, 1]
    moved = np.log(before / (1 - before)) - np.log(after / (1 - after))
    assert np.allclose(moved, bound, atol=1e-6)
    # The model's share: the part of the label's log-odds it gave (here all of a vote-less image's).
    lone = Posterior((0,), (0, 1), np.array([[0.5, 0.5]]), {}, np.array([0]))
    shared = model_share(with_model(lone, np.array([2.0])), np.array([2.0]))
    assert shared[0] == 1.0


def test_a_posterior_against_a_clear_majority_is_held_back_for_more_votes() -> None:
    # Whatever produced it (a worker estimated as an adversary, a prior), a posterior sure of the
    # answer four of five votes did not give labels nothing: the image gets more votes.
    counts = np.array([[1.0, 4.0], [0.0, 2.0], [2.0, 1.0]])
    posterior = Posterior(
        (0, 1, 2),
        (0, 1),
        np.array([[0.999, 0.001], [0.9999, 0.0001], [0.999, 0.001]]),
        {},
        np.array([5, 2, 3]),
        answer_counts=counts,
    )
    assert posterior.clear_majority().tolist() == [1, 1, -1]
    decided = decide_labels(posterior, {0, 1, 2}, BAR, 2, {})
    assert [label.item_id for label in decided.labels] == [2]
    assert decided.confidence[0] == decided.confidence[1] == 0.0
