"""Turning redundant votes into labels with a confidence.

Every aggregator takes a :class:`Votes` table and returns a :class:`Posterior`: a probability per
item and class, plus an estimate per worker.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Votes:
    """Votes as parallel index arrays into ``items``, ``workers`` and ``classes``."""

    items: tuple[Hashable, ...]
    workers: tuple[Hashable, ...]
    classes: tuple[Hashable, ...]
    item_index: NDArray[np.int64]
    worker_index: NDArray[np.int64]
    answer_index: NDArray[np.int64]

    @classmethod
    def from_triples(
        cls, triples: Sequence[tuple[Hashable, Hashable, Hashable]], classes: Sequence[Hashable] | None = None
    ) -> Votes:
        """Build from ``(item, worker, answer)`` triples; classes default to the sorted answers seen."""
        items = tuple(dict.fromkeys(t[0] for t in triples))
        workers = tuple(dict.fromkeys(t[1] for t in triples))
        class_list = tuple(classes) if classes is not None else tuple(sorted({t[2] for t in triples}, key=str))
        item_position = {item: i for i, item in enumerate(items)}
        worker_position = {worker: i for i, worker in enumerate(workers)}
        class_position = {label: i for i, label in enumerate(class_list)}
        unknown = [t[2] for t in triples if t[2] not in class_position]
        if unknown:
            raise ValueError(f"answer {unknown[0]!r} is not one of the classes {class_list}")
        return cls(
            items,
            workers,
            class_list,
            np.array([item_position[t[0]] for t in triples], dtype=np.int64),
            np.array([worker_position[t[1]] for t in triples], dtype=np.int64),
            np.array([class_position[t[2]] for t in triples], dtype=np.int64),
        )

    @classmethod
    def from_arrays(
        cls,
        items: NDArray[Any],
        workers: NDArray[Any],
        answers: NDArray[Any],
        classes: Sequence[Hashable] | None = None,
    ) -> Votes:
        """Build from parallel arrays of item keys, worker keys and answers (any sortable dtype)."""
        item_keys, item_index = np.unique(items, return_inverse=True)
        worker_keys, worker_index = np.unique(workers, return_inverse=True)
        class_keys, answer_index = np.unique(answers, return_inverse=True)
        if classes is not None:
            position = {label: i for i, label in enumerate(classes)}
            unknown = [label for label in class_keys.tolist() if label not in position]
            if unknown:
                raise ValueError(f"answer {unknown[0]!r} is not one of the classes {tuple(classes)}")
            answer_index = np.array([position[label] for label in class_keys.tolist()], dtype=np.int64)[answer_index]
            class_keys = np.array(list(classes), dtype=object)
        return cls(
            tuple(item_keys.tolist()),
            tuple(worker_keys.tolist()),
            tuple(class_keys.tolist()),
            item_index.astype(np.int64),
            worker_index.astype(np.int64),
            answer_index.astype(np.int64),
        )

    def counts(self) -> NDArray[np.float64]:
        """Votes per item and class."""
        cells = self.item_index * len(self.classes) + self.answer_index
        return (
            np.bincount(cells, minlength=len(self.items) * len(self.classes))
            .reshape(len(self.items), len(self.classes))
            .astype(np.float64)
        )


@dataclass(frozen=True)
class Posterior:
    items: tuple[Hashable, ...]
    classes: tuple[Hashable, ...]
    probabilities: NDArray[np.float64]  # items × classes, rows sum to 1
    worker_accuracy: dict[Hashable, float]
    vote_counts: NDArray[np.int64]

    def labels(self) -> NDArray[np.int64]:
        """The most probable class per item; ties go to the lowest class index."""
        return np.asarray(np.argmax(self.probabilities, axis=1), dtype=np.int64)

    def confidence(self) -> NDArray[np.float64]:
        return np.asarray(np.max(self.probabilities, axis=1), dtype=np.float64)


def majority_vote(votes: Votes) -> Posterior:
    """Each item's vote shares. A tie is reported as such (equal shares), and ``labels()`` breaks
    it deterministically toward the lowest class index."""
    counts = votes.counts()
    totals = counts.sum(axis=1, keepdims=True)
    probabilities = counts / np.maximum(totals, 1)
    winners = np.argmax(probabilities, axis=1)
    agreed = (votes.answer_index == winners[votes.item_index]).astype(np.float64)
    per_worker_votes = np.bincount(votes.worker_index, minlength=len(votes.workers))
    per_worker_agreed = np.bincount(votes.worker_index, weights=agreed, minlength=len(votes.workers))
    accuracy = {
        worker: float(per_worker_agreed[i] / max(per_worker_votes[i], 1)) for i, worker in enumerate(votes.workers)
    }
    return Posterior(votes.items, votes.classes, probabilities, accuracy, totals[:, 0].astype(np.int64))


Clamp = tuple[NDArray[np.int64], NDArray[np.float64]]  # gold item indices, and their one-hot rows


def _start(votes: Votes, known: dict[int, int] | None) -> tuple[NDArray[np.float64], NDArray[np.float64], Clamp]:
    """Vote counts, the majority-vote posterior EM starts from, and the gold rows to clamp."""
    n_classes = len(votes.classes)
    if n_classes < 2:
        raise ValueError("aggregation needs at least two classes")
    counts = votes.counts()
    posterior = (counts + 1e-9) / (counts + 1e-9).sum(axis=1, keepdims=True)
    items = np.array(sorted(known or {}), dtype=np.int64)
    rows = np.eye(n_classes)[np.array([(known or {})[i] for i in items], dtype=np.int64)]
    posterior[items] = rows
    return counts, posterior, (items, rows)


def _normalised(log_posterior: NDArray[np.float64], clamp: Clamp) -> NDArray[np.float64]:
    log_posterior = log_posterior - log_posterior.max(axis=1, keepdims=True)
    posterior = np.exp(log_posterior)
    posterior /= posterior.sum(axis=1, keepdims=True)
    posterior[clamp[0]] = clamp[1]
    return posterior


def one_coin_dawid_skene(
    votes: Votes,
    known: dict[int, int] | None = None,
    prior_correct: float = 4.0,
    prior_wrong: float = 1.0,
    tolerance: float = 1e-6,
    max_iterations: int = 200,
) -> Posterior:
    """Dawid–Skene with one accuracy per worker ("one coin"), fitted by EM.

    ``known`` maps item indices to class indices for gold items: their posterior is fixed to the
    known answer, so gold both anchors the classes and measures workers. A Beta prior on each
    accuracy keeps a worker seen once finite and near the prior, and a symmetric Dirichlet(1) on
    the class shares keeps a class never voted for possible.
    """
    n_items, n_classes, n_workers = len(votes.items), len(votes.classes), len(votes.workers)
    counts, posterior, clamp = _start(votes, known)
    worker_votes = np.bincount(votes.worker_index, minlength=n_workers).astype(np.float64)
    accuracy = np.full(n_workers, prior_correct / (prior_correct + prior_wrong))
    for _ in range(max_iterations):
        # M-step: accuracy is the expected share of a worker's votes that match the true class.
        agreement = posterior[votes.item_index, votes.answer_index]
        expected_correct = np.bincount(votes.worker_index, weights=agreement, minlength=n_workers)
        accuracy = (prior_correct - 1 + expected_correct) / (prior_correct + prior_wrong - 2 + worker_votes)
        accuracy = np.clip(accuracy, 1e-4, 1 - 1e-4)
        class_prior = (posterior.sum(axis=0) + 1.0) / (n_items + n_classes)
        # E-step: each vote adds log(acc) to its answer and log((1-acc)/(K-1)) to every other class.
        right = np.log(accuracy)[votes.worker_index]
        wrong = np.log((1 - accuracy) / (n_classes - 1))[votes.worker_index]
        log_posterior = np.tile(np.log(class_prior), (n_items, 1))
        np.add.at(log_posterior, votes.item_index, wrong[:, None])
        np.add.at(log_posterior, (votes.item_index, votes.answer_index), right - wrong)
        updated = _normalised(log_posterior, clamp)
        change = float(np.abs(updated - posterior).max())
        posterior = updated
        if change < tolerance:
            break
    return Posterior(
        votes.items,
        votes.classes,
        posterior,
        {worker: float(accuracy[i]) for i, worker in enumerate(votes.workers)},
        counts.sum(axis=1).astype(np.int64),
    )


def dawid_skene(
    votes: Votes,
    known: dict[int, int] | None = None,
    prior_correct: float = 0.1,
    prior_wrong: float = 0.1,
    tolerance: float = 1e-6,
    max_iterations: int = 200,
) -> Posterior:
    """Dawid–Skene with a full confusion matrix per worker, fitted by EM.

    Unlike one coin, it tells a worker who always answers "no" on a rare class (right 90% of the
    time, and useless) from one who reads the images. Each confusion row gets pseudo-votes:
    ``prior_correct`` on the diagonal and ``prior_wrong`` spread over the rest. The defaults are
    a light smoothing that keeps a worker seen once, or a class never answered, finite; the
    cascade, which fits on few votes per worker early on, passes a stronger prior from
    ``[quality]``. ``known`` clamps gold items to their answers.
    The worker estimate reported is the expected accuracy under the fitted class shares.
    """
    n_items, n_classes, n_workers = len(votes.items), len(votes.classes), len(votes.workers)
    counts, posterior, clamp = _start(votes, known)
    identity = np.eye(n_classes)
    row_prior = identity * prior_correct + (1 - identity) * prior_wrong / (n_classes - 1)
    # Each vote's (worker, answer) cell: the M-step sums posteriors into these cells, and the
    # E-step reads each vote's log-likelihood back out of them, one small table per true class.
    cells = n_workers * n_classes
    vote_cell = votes.worker_index * n_classes + votes.answer_index
    cell_votes = np.bincount(vote_cell, minlength=cells).astype(np.float64)
    # Class-major from here on: each class's probabilities contiguous, so every pass over the
    # votes reads one flat array and the per-item reductions run across a handful of rows.
    probability = np.ascontiguousarray(posterior.T)
    clamp_items, clamp_rows = clamp[0], np.ascontiguousarray(clamp[1].T)
    class_share = np.full(n_classes, 1.0 / n_classes)
    confusion = np.tile(row_prior / row_prior.sum(axis=1, keepdims=True), (n_workers, 1, 1))
    log_odds = np.zeros((n_classes - 1, n_items))
    for _ in range(max_iterations):
        tallies = np.empty((n_classes, cells))
        for true_class in range(n_classes - 1):
            tallies[true_class] = np.bincount(
                vote_cell, weights=probability[true_class][votes.item_index], minlength=cells
            )
        tallies[-1] = np.clip(cell_votes - tallies[:-1].sum(axis=0), 0.0, None)  # posteriors sum to one
        confusion = tallies.reshape(n_classes, n_workers, n_classes).transpose(1, 0, 2) + row_prior
        confusion /= confusion.sum(axis=2, keepdims=True)  # worker × true class × answer
        class_share = (probability.sum(axis=1) + 1.0) / (n_items + n_classes)
        # Only differences between classes matter: each class is measured against the last,
        # which saves one pass over the votes.
        log_by_cell = np.log(confusion).transpose(1, 0, 2).reshape(n_classes, cells)
        log_by_cell -= log_by_cell[-1]
        for true_class in range(n_classes - 1):
            log_odds[true_class] = np.log(class_share[true_class] / class_share[-1]) + np.bincount(
                votes.item_index, weights=log_by_cell[true_class][vote_cell], minlength=n_items
            )
        shift = np.maximum(log_odds.max(axis=0), 0.0)  # keeps every exponent at or below zero
        updated = np.empty_like(probability)
        np.exp(log_odds - shift, out=updated[:-1])
        np.exp(-shift, out=updated[-1])
        updated /= updated.sum(axis=0)
        updated[:, clamp_items] = clamp_rows
        change = float(np.abs(updated - probability).max())
        probability = updated
        if change < tolerance:
            break
    posterior = np.ascontiguousarray(probability.T)
    accuracy = np.einsum("wcc,c->w", confusion, class_share)
    return Posterior(
        votes.items,
        votes.classes,
        posterior,
        {worker: float(accuracy[i]) for i, worker in enumerate(votes.workers)},
        counts.sum(axis=1).astype(np.int64),
    )


Aggregator = Callable[[Votes], Posterior]
METHODS: dict[str, Aggregator] = {
    "majority": majority_vote,
    "dawid-skene": dawid_skene,
    "one-coin": one_coin_dawid_skene,
}
DEFAULT_METHOD = "dawid-skene"
