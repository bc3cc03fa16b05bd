"""Cross-fitting: a score for every labeled example from a model that never trained on it.

The examples are split into ``K`` folds, stratified by label so that every training set holds both
classes; fold ``k`` is scored by a model fitted on the other ``K − 1`` folds (and on any examples
the caller always trains on, such as gold answers, which are never scored). A model that trained
on a label has learned it, wrong or not, so only out-of-fold scores can show that a label is wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

Scorer = Callable[[NDArray[np.int64]], NDArray[np.float64]]
"""Scores the examples at these indices."""
Fit = Callable[[NDArray[np.int64]], Scorer]
"""Fits a model on the examples at these indices, and returns what scores others with it."""


def stratified_folds(labels: NDArray[np.int64], folds: int, seed: int | list[int]) -> NDArray[np.int64]:
    """A fold in ``0..folds-1`` per example, each label spread evenly over the folds in an order
    drawn from ``seed``."""
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, not {folds}")
    given = np.asarray(labels, dtype=np.int64)
    generator = np.random.default_rng(seed)
    assigned = np.empty(len(given), dtype=np.int64)
    offset = 0
    for label in np.unique(given):
        members = np.flatnonzero(given == label)
        shuffled = members[generator.permutation(len(members))]
        # Continue the rotation across labels, so small classes do not all start at fold 0.
        assigned[shuffled] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return assigned


def cross_fit(folds: NDArray[np.int64], fit: Fit) -> NDArray[np.float64]:
    """Out-of-fold scores: example ``i`` is scored by the model fitted on every fold but its own."""
    fold_of = np.asarray(folds, dtype=np.int64)
    scores = np.full(len(fold_of), np.nan)
    for fold in np.unique(fold_of):
        held_out = np.flatnonzero(fold_of == fold)
        training = np.flatnonzero(fold_of != fold)
        scorer = fit(training)
        scores[held_out] = scorer(held_out)
    return scores
