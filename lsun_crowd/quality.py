"""Worker quality from hidden gold items: a Beta posterior on each worker's accuracy."""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import beta

from lsun_crowd.config import QualityConfig


@dataclass(frozen=True)
class WorkerQuality:
    correct: int
    wrong: int
    mean: float  # posterior mean accuracy
    below_bar: float  # posterior probability that accuracy is under the bar
    blocked: bool


def assess(correct: int, wrong: int, policy: QualityConfig) -> WorkerQuality:
    """One miss never blocks an honest worker: the prior must be outweighed by evidence first."""
    a = policy.prior_correct + correct
    b = policy.prior_wrong + wrong
    below = float(beta.cdf(policy.accuracy_bar, a, b))
    return WorkerQuality(correct, wrong, a / (a + b), below, below >= policy.block_confidence)
