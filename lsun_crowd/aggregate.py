"""Votes in, posteriors out: the two tables every aggregator shares, and majority vote.

Every aggregator takes a :class:`Votes` table and returns a :class:`Posterior`: a probability per
item and class, plus an estimate per worker. The EM methods live in :mod:`lsun_crowd.dawid_skene`;
:mod:`lsun_crowd.methods` names them for the command line and the config.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
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


# A clear majority of an image's votes, which no label may go against: all of two or more, or
# this share of this many or more.
CLEAR_SHARE = 0.8
CLEAR_VOTES = 5


def is_clear(agreeing: NDArray[np.float64], totals: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Whether ``agreeing`` of an image's ``totals`` votes make a clear majority: all of two or
    more, or :data:`CLEAR_SHARE` of :data:`CLEAR_VOTES` or more."""
    share = agreeing / np.maximum(totals, 1)
    return np.asarray(((share >= 1.0) & (totals >= 2)) | ((share >= CLEAR_SHARE) & (totals >= CLEAR_VOTES)))


@dataclass(frozen=True)
class Posterior:
    items: tuple[Hashable, ...]
    classes: tuple[Hashable, ...]
    probabilities: NDArray[np.float64]  # items × classes, rows sum to 1
    worker_accuracy: dict[Hashable, float]
    vote_counts: NDArray[np.int64]
    confusion: NDArray[np.float64] | None = None  # workers × true class × answer, where fitted
    answer_counts: NDArray[np.float64] | None = None  # items × classes: the votes for each answer

    def clear_majority(self) -> NDArray[np.int64]:
        """Per item, the answer a clear majority of its votes gave (unanimous with two or more, or
        :data:`CLEAR_SHARE` of :data:`CLEAR_VOTES` or more), and -1 where there is none."""
        if self.answer_counts is None:
            raise ValueError("this posterior does not keep its vote counts")
        counts = self.answer_counts
        top = np.argmax(counts, axis=1)
        clear = is_clear(counts[np.arange(len(counts)), top], counts.sum(axis=1))
        return np.where(clear, top, -1).astype(np.int64)

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
    return Posterior(
        votes.items, votes.classes, probabilities, accuracy, totals[:, 0].astype(np.int64), answer_counts=counts
    )
