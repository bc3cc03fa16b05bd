"""The gold-based blocking policy, by hand and on the real duck votes."""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pytest

from lsun_crowd.config import QualityConfig
from lsun_crowd.quality import assess

from .conftest import SHARED_DATA

POLICY = QualityConfig()  # bar 0.7, 95% sure, Beta(4, 1) prior


def test_one_miss_never_blocks() -> None:
    assert not assess(0, 1, POLICY).blocked
    assert not assess(9, 1, POLICY).blocked
    assert not assess(1, 2, POLICY).blocked  # unlucky start: not yet confident


def test_confidently_bad_workers_are_blocked() -> None:
    assert not assess(10, 10, POLICY).blocked  # a coin-flipper after 20 answers: 93% sure, not yet 95%
    assert assess(15, 15, POLICY).blocked  # and after 30
    assert assess(0, 8, POLICY).blocked
    quality = assess(45, 5, POLICY)
    assert not quality.blocked and quality.mean == pytest.approx(49 / 55)


def test_posterior_is_a_probability_and_monotone() -> None:
    below = [assess(correct, 10, POLICY).below_bar for correct in range(0, 40, 5)]
    assert all(0 <= p <= 1 for p in below)
    assert below == sorted(below, reverse=True)


@pytest.mark.parametrize("seed", range(5))
def test_blocking_on_the_real_duck_votes(seed: int) -> None:
    """A quarter of the duck images serve as gold; workers are judged on them alone and their
    true accuracy is measured on the other images."""
    folder = SHARED_DATA / "crowd_votes" / "duck"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (the shared data is not checked out beside the project)")
    with (folder / "truth.csv").open() as handle:
        truth = {row["question"]: int(row["truth"]) for row in csv.DictReader(handle)}
    with (folder / "answers.csv").open() as handle:
        votes = [(row["question"], row["worker"], int(row["answer"])) for row in csv.DictReader(handle)]
    gold = set(np.random.default_rng(seed).choice(sorted(truth), len(truth) // 4, replace=False).tolist())
    on_gold: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    elsewhere: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for question, worker, answer in votes:
        tally = on_gold if question in gold else elsewhere
        tally[worker][0 if answer == truth[question] else 1] += 1
    accuracy = {worker: right / (right + wrong) for worker, (right, wrong) in elsewhere.items()}
    blocked = {worker for worker, (right, wrong) in on_gold.items() if assess(right, wrong, POLICY).blocked}
    assert len(blocked) >= 5
    assert np.mean([accuracy[w] for w in blocked]) < 0.55
    assert all(accuracy[w] < POLICY.accuracy_bar for w in blocked)  # nobody good enough is blocked
    good = [w for w, value in accuracy.items() if value >= 0.8]
    assert good and not blocked.intersection(good)
