"""Dawid–Skene by EM, full confusion matrices or one coin per worker, as tensor code.

Everything is a handful of passes over flat vote tensors per iteration (gathers and
``index_add_``), with no Python loop over votes, items or workers, so the same code runs on the
CPU and, when ``device`` says so or CUDA is present, on the GPU. Probabilities are kept
class-major (one contiguous row per class) because every pass reads one class at a time.

Both fits take ``known``: item indices clamped to a class (gold), which both anchors the classes
and measures the workers; and priors as pseudo-votes, which keep a worker seen once, an item with
one vote or a class never answered finite. They stop when no probability moves more than
``tolerance`` or after ``max_iterations``, and give the same result every time for the same
votes on the CPU.

torch is imported inside the functions that run, so the commands that only import this module
(every one does, through the command line) start without it. Where the full-confusion fit runs
on the CPU, it is :func:`lsun_crowd.dawid_skene_cpu.dawid_skene_cpu`, the same EM in numpy, and
torch is not imported at all.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lsun_crowd.aggregate import Posterior, Votes
from lsun_crowd.dawid_skene_cpu import dawid_skene_cpu, runs_on_cpu
from lsun_crowd.embed import pick_device

if TYPE_CHECKING:
    import torch


@dataclass
class _Fit:
    """The votes as tensors, the class-major posterior EM starts from, and the gold to clamp."""

    item: torch.Tensor
    worker: torch.Tensor
    answer: torch.Tensor
    probability: torch.Tensor  # classes × items
    clamp_items: torch.Tensor
    clamp_rows: torch.Tensor  # classes × clamped items
    counts: np.ndarray

    @classmethod
    def start(cls, votes: Votes, known: dict[int, int] | None, device: torch.device, dtype: torch.dtype) -> _Fit:
        import torch

        n_classes = len(votes.classes)
        if n_classes < 2:
            raise ValueError("aggregation needs at least two classes")
        counts = votes.counts()
        shares = (counts + 1e-9) / (counts + 1e-9).sum(axis=1, keepdims=True)
        items = np.array(sorted(known or {}), dtype=np.int64)
        rows = np.eye(n_classes)[np.array([(known or {})[i] for i in items], dtype=np.int64)].T
        shares[items] = rows.T
        return cls(
            torch.as_tensor(votes.item_index, device=device),
            torch.as_tensor(votes.worker_index, device=device),
            torch.as_tensor(votes.answer_index, device=device),
            torch.as_tensor(np.ascontiguousarray(shares.T), device=device).to(dtype),
            torch.as_tensor(items, device=device),
            torch.as_tensor(rows, device=device).to(dtype),
            counts,
        )

    def normalise(self, log_odds: torch.Tensor) -> torch.Tensor:
        """Probabilities from log-odds against the last class (which has none of its own)."""
        import torch

        shift = log_odds.max(dim=0).values.clamp_min(0.0)  # every exponent at or below zero
        updated = torch.empty_like(self.probability)
        torch.exp(log_odds - shift, out=updated[:-1])
        torch.exp(-shift, out=updated[-1])
        updated /= updated.sum(dim=0)
        updated[:, self.clamp_items] = self.clamp_rows
        return updated

    def class_share(self) -> torch.Tensor:
        """Each class's share of the items, with one pseudo-item per class."""
        n_classes, n_items = self.probability.shape
        return (self.probability.sum(dim=1) + 1.0) / (n_items + n_classes)

    def update(self, log_odds: torch.Tensor) -> float:
        """Take the E-step's log-odds as the new posterior; return how far any probability moved."""
        updated = self.normalise(log_odds)
        change = float((updated - self.probability).abs().max())
        self.probability = updated
        return change

    def coin_log_odds(self, gain: torch.Tensor, log_odds: torch.Tensor) -> torch.Tensor:
        """The E-step of a model where a vote is right with some probability and otherwise
        spread evenly over the wrong classes (one coin, GLAD). ``gain`` is each vote's log-odds
        of being right against one particular wrong class; against the last class, only the
        votes for a class or for the last one count. Fills ``log_odds`` (classes - 1 × items)."""
        import torch

        n_classes, n_items = self.probability.shape
        class_share = self.class_share()
        zero = torch.zeros_like(gain)
        for true_class in range(n_classes - 1):
            signed = torch.where(self.answer == true_class, gain, zero)
            signed = signed - torch.where(self.answer == n_classes - 1, gain, zero)
            log_odds[true_class] = torch.log(class_share[true_class] / class_share[-1]) + _sum_by(
                self.item, signed, n_items
            )
        return log_odds

    def posterior(self, votes: Votes, accuracy: torch.Tensor, confusion: torch.Tensor | None = None) -> Posterior:
        return Posterior(
            votes.items,
            votes.classes,
            np.ascontiguousarray(self.probability.double().cpu().numpy().T),
            {
                worker: float(value)
                for worker, value in zip(votes.workers, accuracy.double().cpu().tolist(), strict=True)
            },
            self.counts.sum(axis=1).astype(np.int64),
            None if confusion is None else confusion.double().cpu().numpy(),
            np.asarray(self.counts, dtype=np.float64),
        )


def _sum_by(index: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    import torch

    return torch.zeros(size, dtype=values.dtype, device=values.device).index_add_(0, index, values)


def _row_prior(
    votes: Votes,
    prior_correct: float,
    prior_wrong: float,
    worker_prior: Mapping[Hashable, tuple[float, float]] | None,
    where: torch.device,
) -> torch.Tensor:
    """Each worker's confusion pseudo-votes (worker × true class × answer): ``prior_correct`` on
    the diagonal and ``prior_wrong`` spread over the rest, plus the worker's own prior."""
    import torch

    n_classes = len(votes.classes)
    identity = torch.eye(n_classes, dtype=torch.float32, device=where)
    extra = np.zeros((len(votes.workers), 2), dtype=np.float32)
    for index, worker in enumerate(votes.workers):
        extra[index] = (worker_prior or {}).get(worker, (0.0, 0.0))
    right = torch.as_tensor(prior_correct + extra[:, 0], device=where).reshape(-1, 1, 1)
    wrong = torch.as_tensor(prior_wrong + extra[:, 1], device=where).reshape(-1, 1, 1)
    return identity * right + (1 - identity) * wrong / (n_classes - 1)


def dawid_skene(
    votes: Votes,
    known: dict[int, int] | None = None,
    prior_correct: float = 0.1,
    prior_wrong: float = 0.1,
    tolerance: float = 1e-6,
    max_iterations: int = 200,
    device: str | None = None,
    worker_prior: Mapping[Hashable, tuple[float, float]] | None = None,
) -> Posterior:
    """Dawid–Skene with a full confusion matrix per worker.

    Unlike one coin, it tells a worker who always answers "no" on a rare class (right 90% of the
    time, and useless) from one who reads the images. Each confusion row gets pseudo-votes:
    ``prior_correct`` on the diagonal and ``prior_wrong`` spread over the rest. The defaults are a
    light smoothing; the cascade, which fits on few votes per worker early on, passes a stronger
    prior from ``[quality]``. ``worker_prior`` adds, per worker, more pseudo-votes (right, wrong)
    from what is known of them elsewhere (the cascade: their gold answers in other categories),
    so a worker found careless in one category counts for less in the next from the start. The
    worker estimate is the expected accuracy under the fitted class shares.
    """
    if runs_on_cpu(device):
        return dawid_skene_cpu(votes, known, prior_correct, prior_wrong, tolerance, max_iterations, worker_prior)
    import torch

    where = pick_device(device or "auto")
    fit = _Fit.start(votes, known, where, torch.float32)
    n_items, n_classes, n_workers = len(votes.items), len(votes.classes), len(votes.workers)
    cells = n_workers * n_classes
    row_prior = _row_prior(votes, prior_correct, prior_wrong, worker_prior, where)  # worker × class × answer
    # Each vote's (worker, answer) cell: the M-step sums posteriors into these cells and the
    # E-step reads each vote's log-likelihood back out of them, one small table per class.
    vote_cell = fit.worker * n_classes + fit.answer
    cell_votes = _sum_by(vote_cell, torch.ones_like(vote_cell, dtype=torch.float32), cells)
    confusion = row_prior / row_prior.sum(dim=2, keepdim=True)
    class_share = torch.full((n_classes,), 1.0 / n_classes, device=where)
    log_odds = torch.zeros((n_classes - 1, n_items), device=where)
    for _ in range(max_iterations):
        tallies = torch.empty((n_classes, cells), device=where)
        for true_class in range(n_classes - 1):
            tallies[true_class] = _sum_by(vote_cell, fit.probability[true_class][fit.item], cells)
        tallies[-1] = (cell_votes - tallies[:-1].sum(dim=0)).clamp_min(0.0)  # posteriors sum to one
        confusion = tallies.reshape(n_classes, n_workers, n_classes).permute(1, 0, 2) + row_prior
        confusion = confusion / confusion.sum(dim=2, keepdim=True)  # worker × true class × answer
        class_share = fit.class_share()
        # Only differences between classes matter: each is measured against the last class,
        # which saves one pass over the votes.
        log_by_cell = torch.log(confusion).permute(1, 0, 2).reshape(n_classes, cells)
        log_by_cell = log_by_cell - log_by_cell[-1]
        for true_class in range(n_classes - 1):
            log_odds[true_class] = torch.log(class_share[true_class] / class_share[-1]) + _sum_by(
                fit.item, log_by_cell[true_class][vote_cell], n_items
            )
        if fit.update(log_odds) < tolerance:
            break
    accuracy = torch.einsum("wcc,c->w", confusion, class_share)
    return fit.posterior(votes, accuracy, confusion)


def one_coin_dawid_skene(
    votes: Votes,
    known: dict[int, int] | None = None,
    prior_correct: float = 4.0,
    prior_wrong: float = 1.0,
    tolerance: float = 1e-6,
    max_iterations: int = 200,
    device: str | None = None,
) -> Posterior:
    """Dawid–Skene with one accuracy per worker ("one coin"); a Beta(``prior_correct``,
    ``prior_wrong``) prior on each accuracy, fitted as its posterior mode."""
    import torch

    where = pick_device(device or "auto")
    fit = _Fit.start(votes, known, where, torch.float32)
    n_items, n_classes, n_workers = len(votes.items), len(votes.classes), len(votes.workers)
    worker_votes = _sum_by(fit.worker, torch.ones_like(fit.worker, dtype=torch.float32), n_workers)
    accuracy = torch.full((n_workers,), prior_correct / (prior_correct + prior_wrong), device=where)
    log_odds = torch.zeros((n_classes - 1, n_items), device=where)
    answered = fit.answer * n_items + fit.item  # each vote's (answer, item) in the flat posterior
    for _ in range(max_iterations):
        # M-step: accuracy is the expected share of a worker's votes that match the true class.
        agreement = fit.probability.reshape(-1)[answered]
        expected = _sum_by(fit.worker, agreement, n_workers)
        accuracy = ((prior_correct - 1 + expected) / (prior_correct + prior_wrong - 2 + worker_votes)).clamp(
            1e-4, 1 - 1e-4
        )
        # E-step: a vote adds log(acc) to its answer and log((1 - acc) / (K - 1)) to each other class.
        gain = torch.log(accuracy)[fit.worker] - torch.log((1 - accuracy) / (n_classes - 1))[fit.worker]
        if fit.update(fit.coin_log_odds(gain, log_odds)) < tolerance:
            break
    return fit.posterior(votes, accuracy)
