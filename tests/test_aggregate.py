from __future__ import annotations

import numpy as np
import pytest

from lsun_crowd.aggregate import Votes, majority_vote
from lsun_crowd.dawid_skene import dawid_skene, one_coin_dawid_skene
from lsun_crowd.glad import glad


def test_majority_vote_by_hand() -> None:
    votes = Votes.from_triples(
        [("a", "w1", "cat"), ("a", "w2", "cat"), ("a", "w3", "dog"), ("b", "w1", "dog"), ("b", "w2", "cat")]
    )
    posterior = majority_vote(votes)
    assert posterior.classes == ("cat", "dog")
    np.testing.assert_allclose(posterior.probabilities, [[2 / 3, 1 / 3], [0.5, 0.5]])
    assert posterior.labels().tolist() == [0, 0]  # the tie on b goes to the lowest class index
    assert posterior.vote_counts.tolist() == [3, 2]
    assert posterior.worker_accuracy == {"w1": 0.5, "w2": 1.0, "w3": 0.0}


def test_unknown_answer_is_an_error() -> None:
    with pytest.raises(ValueError, match="answer 'fish' is not one of the classes"):
        Votes.from_triples([("a", "w", "fish")], classes=["cat", "dog"])


def test_one_coin_by_hand_single_vote_stays_finite() -> None:
    votes = Votes.from_triples([("a", "w1", 1)], classes=(0, 1))
    posterior = one_coin_dawid_skene(votes, prior_correct=4, prior_wrong=1)
    assert np.all(np.isfinite(posterior.probabilities))
    # One vote, accuracy (3 + p) / 4 with p the posterior itself: a fixed point well above 1/2.
    assert 0.75 < posterior.probabilities[0, 1] < 1.0


def simulate(seed: int, items: int = 2000, workers: int = 40, per_item: int = 5):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    truth = (rng.random(items) < 0.3).astype(int)
    accuracy = rng.uniform(0.55, 0.95, workers)
    accuracy[:6] = 0.5  # spammers
    triples = []
    for item in range(items):
        for worker in rng.choice(workers, per_item, replace=False):
            correct = rng.random() < accuracy[worker]
            triples.append((item, int(worker), int(truth[item] if correct else 1 - truth[item])))
    return truth, accuracy, triples


def test_one_coin_recovers_worker_accuracy_and_beats_majority() -> None:
    truth, accuracy, triples = simulate(0)
    votes = Votes.from_triples(triples, classes=(0, 1))
    posterior = one_coin_dawid_skene(votes)
    estimated = np.array([posterior.worker_accuracy[w] for w in range(len(accuracy))])
    realised = np.array(
        [
            np.mean([answer == truth[item] for item, worker, answer in triples if worker == w])
            for w in range(len(accuracy))
        ]
    )
    assert np.abs(estimated - realised).max() < 0.05
    assert np.abs(estimated[:6] - 0.5).max() < 0.1  # spammers are found
    items = np.array(posterior.items)
    em_accuracy = float((posterior.labels() == truth[items]).mean())
    mv_accuracy = float((majority_vote(votes).labels() == truth[items]).mean())
    assert em_accuracy > mv_accuracy + 0.02, (em_accuracy, mv_accuracy)
    assert em_accuracy > 0.9


def test_gold_items_are_clamped_and_anchor_the_classes() -> None:
    # Everyone answers the opposite of the truth: only gold can tell.
    triples = [(item, worker, 1 - (item % 2)) for item in range(50) for worker in range(3)]
    votes = Votes.from_triples(triples, classes=(0, 1))
    known = {index: int(item % 2) for index, item in enumerate(votes.items) if item < 20}
    posterior = one_coin_dawid_skene(votes, known)
    assert posterior.labels().tolist() == [item % 2 for item in votes.items]
    assert all(acc < 0.2 for acc in posterior.worker_accuracy.values())


def test_one_coin_is_deterministic() -> None:
    _, _, triples = simulate(1, items=300)
    votes = Votes.from_triples(triples, classes=(0, 1))
    first = one_coin_dawid_skene(votes).probabilities
    np.testing.assert_array_equal(first, one_coin_dawid_skene(votes).probabilities)


def test_dawid_skene_recovers_known_confusion_matrices() -> None:
    rng = np.random.default_rng(3)
    items, workers = 4000, 30
    truth = (rng.random(items) < 0.25).astype(int)
    # Each worker: P(answer 1 | true 1) and P(answer 0 | true 0), deliberately lopsided for some.
    sensitivity = rng.uniform(0.5, 0.98, workers)
    specificity = rng.uniform(0.6, 0.99, workers)
    sensitivity[:3], specificity[:3] = 0.0, 1.0  # always "no"
    triples = []
    for item in range(items):
        for worker in rng.choice(workers, 6, replace=False):
            says_yes = rng.random() < (sensitivity[worker] if truth[item] else 1 - specificity[worker])
            triples.append((item, int(worker), int(says_yes)))
    votes = Votes.from_triples(triples, classes=(0, 1))
    posterior = dawid_skene(votes)
    assert posterior.confusion is not None
    order = [votes.workers.index(w) for w in range(workers)]
    fitted = posterior.confusion[order]
    assert np.abs(fitted[:, 1, 1] - sensitivity).max() < 0.08
    assert np.abs(fitted[:, 0, 0] - specificity).max() < 0.05
    items_order = np.array(votes.items)
    ds_accuracy = (posterior.labels() == truth[items_order]).mean()
    mv_accuracy = (majority_vote(votes).labels() == truth[items_order]).mean()
    assert ds_accuracy > mv_accuracy + 0.03, (ds_accuracy, mv_accuracy)


def test_dawid_skene_by_hand_and_degenerate_inputs() -> None:
    # Two reliable workers agree against a third on every item: the third's errors are learned.
    triples = [(item, worker, item % 2) for item in range(40) for worker in ("a", "b")]
    triples += [(item, "c", 1 - item % 2) for item in range(40)]
    posterior = dawid_skene(Votes.from_triples(triples, classes=(0, 1)))
    assert posterior.labels().tolist() == [item % 2 for item in range(40)]
    assert posterior.worker_accuracy["c"] < 0.05 < 0.95 < posterior.worker_accuracy["a"]
    # A class nobody answered, a worker seen once, an item with one vote: all finite.
    lonely = dawid_skene(Votes.from_triples([("x", "w", "cat")], classes=("cat", "dog", "emu")))
    assert np.all(np.isfinite(lonely.probabilities)) and lonely.labels().tolist() == [0]
    assert np.allclose(lonely.probabilities.sum(axis=1), 1.0)


def test_dawid_skene_runs_on_an_explicit_device_and_is_repeatable() -> None:
    _, _, triples = simulate(2, items=500)
    votes = Votes.from_triples(triples, classes=(0, 1))
    first = dawid_skene(votes, device="cpu").probabilities
    np.testing.assert_array_equal(first, dawid_skene(votes, device="cpu").probabilities)


def test_glad_by_hand_unanimous_and_single_vote() -> None:
    votes = Votes.from_triples([("a", "w1", 1), ("a", "w2", 1), ("b", "w1", 0), ("c", "w3", 0)], classes=(0, 1))
    posterior = glad(votes)
    assert np.all(np.isfinite(posterior.probabilities))
    np.testing.assert_allclose(posterior.probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert posterior.labels().tolist() == [1, 0, 0]
    # Two agreeing votes say more than one.
    assert posterior.probabilities[0, 1] > posterior.probabilities[2, 0] > 0.5


def test_glad_finds_adversaries_and_beats_majority() -> None:
    truth, accuracy, triples = simulate(2)
    adversaries = {int(w) for w in np.argsort(accuracy)[-3:]}  # the best readers, answering the opposite
    triples = [(i, w, 1 - a if w in adversaries else a) for i, w, a in triples]
    votes = Votes.from_triples(triples, classes=(0, 1))
    posterior = glad(votes)
    items = np.array(posterior.items)
    glad_accuracy = float((posterior.labels() == truth[items]).mean())
    mv_accuracy = float((majority_vote(votes).labels() == truth[items]).mean())
    assert glad_accuracy > mv_accuracy + 0.02, (glad_accuracy, mv_accuracy)
    assert all(posterior.worker_accuracy[w] < 0.3 for w in adversaries)
    honest = [w for w in range(len(accuracy)) if w not in adversaries and accuracy[w] > 0.85]
    assert honest and all(posterior.worker_accuracy[w] > 0.75 for w in honest)


def test_glad_clamps_gold_and_is_deterministic() -> None:
    triples = [(item, worker, 1 - (item % 2)) for item in range(40) for worker in range(3)]
    votes = Votes.from_triples(triples, classes=(0, 1))
    known = {index: int(item % 2) for index, item in enumerate(votes.items) if item < 24}
    first = glad(votes, known)
    assert first.labels().tolist() == [item % 2 for item in votes.items]
    np.testing.assert_array_equal(first.probabilities, glad(votes, known).probabilities)
