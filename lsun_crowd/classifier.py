"""The per-round head: a small network trained on cached embeddings and human labels.

torch is imported inside the functions that train and score, so the commands that only import
this module (every one does, through the command line) start without it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from lsun_crowd.config import ModelConfig
from lsun_crowd.embed import pick_device
from lsun_crowd.thresholds import fit_calibration

if TYPE_CHECKING:
    import torch

MINI_BATCH = 1024
SMALL_HEAD = 200_000  # parameters below which a CPU trains on one thread


class TrainingError(ValueError):
    pass


@dataclass
class Head:
    network: torch.nn.Module
    mean: torch.Tensor
    scale: torch.Tensor
    device: torch.device
    epochs: int = 0  # epochs it trained (with early stopping: its best epoch)

    def logits(self, embeddings: NDArray[np.float32]) -> NDArray[np.float64]:
        """Log-odds of the positive class for each row. Thresholds are chosen on these, because
        probabilities saturate at exactly 1.0 and would tie the most confident images together."""
        import torch

        if len(embeddings) == 0:
            return np.zeros(0)
        scores = []
        with torch.inference_mode():
            for start in range(0, len(embeddings), 65536):
                batch = torch.as_tensor(embeddings[start : start + 65536], device=self.device)
                scores.append(self.network((batch - self.mean) / self.scale).squeeze(1).double().cpu().numpy())
        return np.concatenate(scores)

    def to_bytes(self) -> bytes:
        """The trained head, to store beside its round and score later images with."""
        import torch

        buffer = io.BytesIO()
        state = {name: tensor.cpu() for name, tensor in self.network.state_dict().items()}
        torch.save({"network": state, "mean": self.mean.cpu(), "scale": self.scale.cpu()}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, device: torch.device) -> Head:
        import torch

        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        state: dict[str, torch.Tensor] = saved["network"]
        dim = int(saved["mean"].shape[0])
        hidden = int(state["0.weight"].shape[0]) if "0.weight" in state else 0
        network = _network(dim, hidden)
        network.load_state_dict(state)
        network.to(device).eval()
        return cls(network, saved["mean"].to(device), saved["scale"].to(device), device)


def _network(dim: int, hidden_units: int) -> torch.nn.Module:
    """A one-hidden-layer network, or a linear one with ``hidden_units == 0``."""
    import torch

    if hidden_units > 0:
        return torch.nn.Sequential(
            torch.nn.Linear(dim, hidden_units),
            torch.nn.GELU(),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(hidden_units, 1),
        )
    return torch.nn.Linear(dim, 1)


def probability(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)


MIN_STEPS_PER_EPOCH = 8  # a small training set is cut into this many mini-batches an epoch
PATIENCE = 15  # epochs without a better held-out loss before training stops
MIN_EPOCHS = 10


def mini_batch(count: int) -> int:
    """Mini-batch size for a training set of ``count``: at least :data:`MIN_STEPS_PER_EPOCH`
    steps an epoch, so that an epoch count means about the same training whatever the size (a
    first round of 400 labels took one step an epoch at a fixed batch of 1,024, and stayed
    underfit at any epoch count the defaults allowed)."""
    return max(16, min(MINI_BATCH, -(-count // MIN_STEPS_PER_EPOCH)))


def standard_scale(features: torch.Tensor) -> torch.Tensor:
    """Each feature's divisor: its standard deviation, but never below the median feature's. Full
    standardization blows a nearly constant feature (a thumbnail's border pixel, where only scan
    noise varies) up to the weight of an informative one: on 16 px digit scans, a head trained on
    400 labels ranked a 1% digit at an AUC of 0.905 with it, and 0.946 with this floor (0.9918 and
    0.9934 for an 11% digit on 2,000 labels; ``benchmarks/head_on_pixels.py``)."""
    spread = features.std(0, unbiased=False)
    return spread.clamp_min(max(float(spread.median()), 1e-3))


class _Trainer:
    """One head being trained: its data (standardized, class-balanced), network and optimizer."""

    def __init__(
        self,
        embeddings: NDArray[np.float32],
        targets: NDArray[np.float64],
        weights: NDArray[np.float64],
        config: ModelConfig,
        seed: int,
    ) -> None:
        import torch

        if len(embeddings) != len(targets) or len(targets) != len(weights):
            raise TrainingError("embeddings, targets and weights differ in length")
        positives = float((targets * weights).sum())
        negatives = float(((1 - targets) * weights).sum())
        if positives <= 0 or negatives <= 0:
            raise TrainingError("training needs at least one positive and one negative human label")
        self.device = pick_device(config.device)
        self.generator = torch.Generator().manual_seed(seed)
        features = torch.as_tensor(embeddings, dtype=torch.float32)
        self.mean = features.mean(0)
        self.scale = standard_scale(features)
        self.features = ((features - self.mean) / self.scale).to(self.device)
        self.target = torch.as_tensor(targets, dtype=torch.float32, device=self.device)
        # Balance the classes so a rare category is not learned as "always negative".
        self.rare_positive = positives < negatives
        self.ratio = negatives / positives if self.rare_positive else positives / negatives
        weight = torch.as_tensor(weights, dtype=torch.float32, device=self.device) * self.balance(self.target)
        self.weight = weight / weight.mean()
        torch.manual_seed(seed)
        self.network = _network(self.features.shape[1], config.hidden_units).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.loss = torch.nn.BCEWithLogitsLoss(reduction="none")
        self.batch = mini_batch(len(self.features))

    def balance(self, target: torch.Tensor) -> torch.Tensor:
        import torch

        if self.rare_positive:
            return torch.where(target > 0.5, self.ratio, 1.0)
        return torch.where(target > 0.5, 1.0, self.ratio)

    @property
    def small(self) -> bool:
        return self.device.type == "cpu" and sum(p.numel() for p in self.network.parameters()) < SMALL_HEAD

    def epoch(self) -> None:
        import torch

        self.network.train()
        order = torch.randperm(len(self.features), generator=self.generator).to(self.device)
        for start in range(0, len(self.features), self.batch):
            index = order[start : start + self.batch]
            logits = self.network(self.features[index]).squeeze(1)
            loss = (self.loss(logits, self.target[index]) * self.weight[index]).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

    def held_out(
        self, embeddings: NDArray[np.float32], targets: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], float]:
        """Logits of held-out images, and their class-balanced loss (summed)."""
        import torch

        self.network.eval()
        with torch.inference_mode():
            features = ((torch.as_tensor(embeddings, dtype=torch.float32) - self.mean) / self.scale).to(self.device)
            target = torch.as_tensor(targets, dtype=torch.float32, device=self.device)
            logits = self.network(features).squeeze(1)
            loss = float((self.loss(logits, target) * self.balance(target)).sum())
        return logits.double().cpu().numpy(), loss

    def head(self, epochs: int) -> Head:
        self.network.eval()
        return Head(self.network, self.mean.to(self.device), self.scale.to(self.device), self.device, epochs)


class _OneThread:
    """A small head's steps are too short to share between threads: on a busy CPU the threads
    spin-wait on one another (measured 70 s against 15 s for 3,000 steps with two other jobs)."""

    def __init__(self, small: bool) -> None:
        self.small = small
        self.threads = 0

    def __enter__(self) -> None:
        import torch

        self.threads = torch.get_num_threads()
        if self.small:
            torch.set_num_threads(1)

    def __exit__(self, *_: object) -> None:
        import torch

        if self.small:
            torch.set_num_threads(self.threads)


def train_head(
    embeddings: NDArray[np.float32],
    targets: NDArray[np.float64],
    weights: NDArray[np.float64],
    config: ModelConfig,
    seed: int,
    validation: tuple[NDArray[np.float32], NDArray[np.float64]] | None = None,
    epochs: int | None = None,
) -> Head:
    """Fit a head on soft targets in [0, 1] with per-example weights; both classes must appear.

    With ``validation`` (held-out embeddings and labels), training stops once the held-out loss
    has not improved for :data:`PATIENCE` epochs, and the head is the one of its best epoch
    (:attr:`Head.epochs` records which). Without, it runs ``epochs`` (default ``config.epochs``)."""
    trainer = _Trainer(embeddings, targets, weights, config, seed)
    limit = epochs if epochs is not None else config.epochs
    best_loss, best_epoch, best_state = math.inf, limit, None
    with _OneThread(trainer.small):
        for epoch in range(1, limit + 1):
            trainer.epoch()
            if validation is None or len(validation[0]) == 0:
                continue
            _, loss = trainer.held_out(*validation)
            if loss < best_loss - 1e-6:
                best_loss, best_epoch = loss, epoch
                best_state = {name: tensor.detach().clone() for name, tensor in trainer.network.state_dict().items()}
            elif epoch >= MIN_EPOCHS and epoch - best_epoch >= PATIENCE:
                break
    if best_state is not None:
        trainer.network.load_state_dict(best_state)
    return trainer.head(best_epoch)


def calibrated_loss(logits: NDArray[np.float64], labels: NDArray[np.int64]) -> float:
    """Log loss of ``logits`` on ``labels`` after their logistic calibration (summed, in nats)."""
    calibrated = fit_calibration(logits, labels)
    z = calibrated.slope * logits + calibrated.intercept
    return float((np.logaddexp(0, z) - labels * z).sum())


def cross_fit_heads(
    embeddings: NDArray[np.float32],
    targets: NDArray[np.float64],
    weights: NDArray[np.float64],
    fold_of: NDArray[np.int64],
    always: tuple[NDArray[np.float32], NDArray[np.float64]],
    config: ModelConfig,
    seed: int,
) -> tuple[NDArray[np.float64], int]:
    """Out-of-fold logits of every example and the epochs to train for, from one head per fold
    trained in step: each epoch, every head trains once and scores its held-out fold, and training
    stops once the held-out loss of all folds together has not improved for :data:`PATIENCE`
    epochs. One pooled curve picks the epoch: each fold's own is noisy on a rare class (a fold of a
    first round at 1% positives holds one or two). ``always`` (gold answers) trains every head and
    is never scored.

    The curve is of the held-out loss *after* the logistic calibration the split refits on these
    scores (:func:`lsun_crowd.thresholds.fit_calibration`), so it measures how well the head ranks,
    not how sure it is. The raw loss rewards timid logits and stopped a first round of 375 digit
    labels at epoch 2, where its ranking of the pool had an AUC of 0.945 against 0.975 from epoch 10 on."""
    extra_features, extra_targets = always
    trainers = []
    folds = sorted(set(fold_of.tolist()))
    for fold in folds:
        rows = fold_of != fold
        trainers.append(
            _Trainer(
                np.concatenate([embeddings[rows], extra_features]),
                np.concatenate([targets[rows], extra_targets]),
                np.concatenate([weights[rows], np.ones(len(extra_targets))]),
                config,
                seed + 7919 * (fold + 1),
            )
        )
    labels = (targets >= 0.5).astype(np.int64)
    logits = np.zeros(len(targets))
    best_logits = logits.copy()
    best_loss, best_epoch = math.inf, config.epochs
    with _OneThread(trainers[0].small):
        for epoch in range(1, config.epochs + 1):
            for fold, trainer in zip(folds, trainers, strict=True):
                trainer.epoch()
                held = fold_of == fold
                logits[held], _ = trainer.held_out(embeddings[held], targets[held])
            total = calibrated_loss(logits, labels)
            if total < best_loss - 1e-6:
                best_loss, best_epoch, best_logits = total, epoch, logits.copy()
            elif epoch >= MIN_EPOCHS and epoch - best_epoch >= PATIENCE:
                break
    return best_logits, best_epoch
