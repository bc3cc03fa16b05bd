"""Confident learning: which given labels are likely wrong, from out-of-sample class probabilities.

The method of Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in Dataset
Labels" (JAIR 70, 2021), written from the paper (cleanlab, its authors' package, is AGPL-3.0):

1. Each class ``j`` gets a threshold ``t_j``: the mean probability of ``j`` that the model gives
   the examples *labeled* ``j`` (their average self-confidence). A threshold per class absorbs a
   model that is more or less confident on one class than on another.
2. The *confident joint* ``C[i, j]`` counts the examples labeled ``i`` whose probability of ``j``
   reaches ``t_j`` (the most probable such ``j`` where several do; none where none does).
3. Calibrated so that each row sums to the number of examples given that label, and normalized,
   it estimates ``Q[i, j]``, the joint distribution of given label ``i`` and true label ``j``.
4. Label issues are read off it by one of the paper's rules (:class:`Rule`): the off-diagonal
   entries of the confident joint themselves, or pruning by class, by noise rate, or both.

Probabilities must be out of sample (cross-fitted, see :mod:`lsun_crowd.crossfit`): a model that
trained on a label has learned it, wrong or not.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


class Rule(enum.StrEnum):
    """How label issues are read off the confident joint (the paper's section 3.2)."""

    CONFIDENT_JOINT = "confident_joint"  # C_{ỹ,y*}: every off-diagonal example of the confident joint
    PRUNE_BY_CLASS = "prune_by_class"  # PBC: per given class, the n·Σ_{j≠i} Q[i,j] least self-confident
    PRUNE_BY_NOISE_RATE = "prune_by_noise_rate"  # PBNR: per off-diagonal cell, the n·Q[i,j] largest margins
    BOTH = "both"  # C+NR: flagged by both PBC and PBNR
    ARGMAX = "argmax"  # C_confusion: the given label is not the most probable class (the paper's baseline)


@dataclass(frozen=True)
class LabelIssues:
    """What confident learning found: a mask over the examples, and the flagged ones ranked from the
    most to the least likely to be wrong (lowest self-confidence first)."""

    issues: NDArray[np.bool_]
    ranked: NDArray[np.int64]
    thresholds: NDArray[np.float64]  # t_j per class
    confident_joint: NDArray[np.int64]  # C[given, confident class]
    joint: NDArray[np.float64]  # Q[given, true], sums to 1
    self_confidence: NDArray[np.float64]  # p̂(given label | x) per example

    @property
    def count(self) -> int:
        return int(self.issues.sum())


def _check(pred_probs: NDArray[np.float64], labels: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    probabilities = np.asarray(pred_probs, dtype=np.float64)
    given = np.asarray(labels)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise ValueError(
            f"pred_probs must be an examples × classes matrix with 2 or more classes, not {probabilities.shape}"
        )
    if given.shape != (probabilities.shape[0],):
        raise ValueError(f"{len(given)} label(s) for {probabilities.shape[0]} row(s) of probabilities")
    if not np.isfinite(probabilities).all() or (probabilities < 0).any() or (probabilities > 1).any():
        raise ValueError("pred_probs must be probabilities in [0, 1]")
    if not np.issubdtype(given.dtype, np.integer) or (
        len(given) and (given.min() < 0 or given.max() >= probabilities.shape[1])
    ):
        raise ValueError(f"labels must be class indices in 0..{probabilities.shape[1] - 1}")
    return probabilities, given.astype(np.int64)


def per_class_thresholds(pred_probs: NDArray[np.float64], labels: NDArray[np.int64]) -> NDArray[np.float64]:
    """``t_j``: the mean probability of class ``j`` over the examples labeled ``j``. A class nobody
    was given gets threshold 1 + ε, so that no example counts as confidently in it."""
    probabilities, given = _check(pred_probs, labels)
    classes = probabilities.shape[1]
    sums = np.bincount(given, weights=probabilities[np.arange(len(given)), given], minlength=classes)
    counts = np.bincount(given, minlength=classes)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0 + 1e-9)


def confident_classes(pred_probs: NDArray[np.float64], thresholds: NDArray[np.float64]) -> NDArray[np.int64]:
    """Per example, the most probable class among those whose probability reaches their threshold,
    or -1 where no class does."""
    above = pred_probs >= thresholds[None, :]
    masked = np.where(above, pred_probs, -np.inf)
    chosen = np.argmax(masked, axis=1)
    return np.where(above.any(axis=1), chosen, -1).astype(np.int64)


def confident_joint(pred_probs: NDArray[np.float64], labels: NDArray[np.int64]) -> NDArray[np.int64]:
    """``C[i, j]``: examples labeled ``i`` confidently in class ``j``."""
    probabilities, given = _check(pred_probs, labels)
    classes = probabilities.shape[1]
    confident = confident_classes(probabilities, per_class_thresholds(probabilities, given))
    counted = confident >= 0
    cells = given[counted] * classes + confident[counted]
    return np.bincount(cells, minlength=classes * classes).reshape(classes, classes).astype(np.int64)


def calibrated_joint(joint: NDArray[np.int64], labels: NDArray[np.int64]) -> NDArray[np.float64]:
    """``Q``: the confident joint with each row rescaled to the number of examples given that label,
    then normalized to sum to 1 (the paper's equation 3). A row with no confident example puts its
    examples on the diagonal: nothing says they are wrong."""
    classes = joint.shape[0]
    given_counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes).astype(np.float64)
    rows = joint.sum(axis=1).astype(np.float64)
    scaled = np.where(rows[:, None] > 0, joint / np.maximum(rows, 1)[:, None], np.eye(classes)) * given_counts[:, None]
    total = scaled.sum()
    return scaled / total if total > 0 else scaled


def find_label_issues(
    pred_probs: NDArray[np.float64], labels: NDArray[np.int64], rule: Rule | str = Rule.PRUNE_BY_NOISE_RATE
) -> LabelIssues:
    """The examples whose given label confident learning finds likely wrong, by ``rule``."""
    probabilities, given = _check(pred_probs, labels)
    rule = Rule(rule)
    count, classes = probabilities.shape
    thresholds = per_class_thresholds(probabilities, given)
    confident = confident_classes(probabilities, thresholds)
    counted = confident >= 0
    joint_counts = (
        np.bincount(given[counted] * classes + confident[counted], minlength=classes * classes)
        .reshape(classes, classes)
        .astype(np.int64)
    )
    joint = calibrated_joint(joint_counts, given)
    self_confidence = probabilities[np.arange(count), given]
    if rule is Rule.CONFIDENT_JOINT:
        issues = counted & (confident != given)
    elif rule is Rule.ARGMAX:
        issues = np.argmax(probabilities, axis=1) != given
    else:
        by_class = _prune_by_class(probabilities, given, joint, self_confidence)
        by_noise_rate = _prune_by_noise_rate(probabilities, given, joint)
        issues = {
            Rule.PRUNE_BY_CLASS: by_class,
            Rule.PRUNE_BY_NOISE_RATE: by_noise_rate,
            Rule.BOTH: by_class & by_noise_rate,
        }[rule]
    flagged = np.flatnonzero(issues)
    ranked = flagged[np.argsort(self_confidence[flagged], kind="stable")]
    return LabelIssues(issues, ranked.astype(np.int64), thresholds, joint_counts, joint, self_confidence)


def _prune_by_class(
    probabilities: NDArray[np.float64],
    given: NDArray[np.int64],
    joint: NDArray[np.float64],
    self_confidence: NDArray[np.float64],
) -> NDArray[np.bool_]:
    """Per given class ``i``, the ``round(n · Σ_{j≠i} Q[i, j])`` examples of least self-confidence."""
    count = len(given)
    issues = np.zeros(count, dtype=bool)
    for label in range(probabilities.shape[1]):
        members = np.flatnonzero(given == label)
        wrong = round(float(count * (joint[label].sum() - joint[label, label])))
        if wrong and len(members):
            issues[members[np.argsort(self_confidence[members], kind="stable")[:wrong]]] = True
    return issues


def _prune_by_noise_rate(
    probabilities: NDArray[np.float64], given: NDArray[np.int64], joint: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """Per off-diagonal cell ``(i, j)``, the ``round(n · Q[i, j])`` examples labeled ``i`` with the
    largest margin ``p̂_j − p̂_i``."""
    count, classes = probabilities.shape
    issues = np.zeros(count, dtype=bool)
    for label in range(classes):
        members = np.flatnonzero(given == label)
        for other in range(classes):
            wrong = round(float(count * joint[label, other]))
            if other == label or not wrong or not len(members):
                continue
            margin = probabilities[members, other] - probabilities[members, label]
            issues[members[np.argsort(-margin, kind="stable")[:wrong]]] = True
    return issues


def binary_probabilities(positive: NDArray[np.float64]) -> NDArray[np.float64]:
    """The examples × 2 matrix of a binary model's probability of class 1."""
    p = np.clip(np.asarray(positive, dtype=np.float64), 0.0, 1.0)
    return np.stack([1 - p, p], axis=1)
