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
    import torch

    if len(embeddings) != len(targets) or len(targets) != len(weights):
        raise TrainingError("embeddings, targets and weights differ in length")
    positives = float((targets * weights).sum())
    negatives = float(((1 - targets) * weights).sum())
    if positives <= 0 or negatives <= 0:
        raise TrainingError("training needs at least one positive and one negative human label")
    device = pick_device(config.device)
    generator = torch.Generator().manual_seed(seed)
    features = torch.as_tensor(embeddings, dtype=torch.float32)
    mean = features.mean(0)
    scale = features.std(0, unbiased=False).clamp_min(1e-3)
    features = ((features - mean) / scale).to(device)
    target = torch.as_tensor(targets, dtype=torch.float32, device=device)
    # Balance the classes so a rare category is not learned as "always negative".
    ratio = negatives / positives if positives < negatives else positives / negatives
    balance = torch.where(target > 0.5, ratio, 1.0) if positives < negatives else torch.where(target > 0.5, 1.0, ratio)
    weight = torch.as_tensor(weights, dtype=torch.float32, device=device) * balance
    weight = weight / weight.mean()
    held_out = None
    if validation is not None and len(validation[0]) > 0:
        held_features = ((torch.as_tensor(validation[0], dtype=torch.float32) - mean) / scale).to(device)
        held_target = torch.as_tensor(validation[1], dtype=torch.float32, device=device)
        # The same class balance as training, so the loss it stops on weighs the rare class alike.
        held_weight = (
            torch.where(held_target > 0.5, ratio, 1.0)
            if positives < negatives
            else torch.where(held_target > 0.5, 1.0, ratio)
        )
        held_out = (held_features, held_target, held_weight)

    torch.manual_seed(seed)
    network = _network(features.shape[1], config.hidden_units).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_function = torch.nn.BCEWithLogitsLoss(reduction="none")
    count = len(features)
    batch = mini_batch(count)
    # A small head's steps are too short to share between threads: on a busy CPU the threads
    # spin-wait on one another (measured 70 s against 15 s for 3,000 steps with two other jobs).
    threads = torch.get_num_threads()
    small = device.type == "cpu" and sum(p.numel() for p in network.parameters()) < SMALL_HEAD
    if small:
        torch.set_num_threads(1)
    best_loss, best_epoch, best_state = math.inf, 0, None
    limit = epochs if epochs is not None else config.epochs
    try:
        for epoch in range(1, limit + 1):
            network.train()
            order = torch.randperm(count, generator=generator).to(device)
            for start in range(0, count, batch):
                index = order[start : start + batch]
                logits = network(features[index]).squeeze(1)
                loss = (loss_function(logits, target[index]) * weight[index]).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if held_out is None:
                continue
            network.eval()
            with torch.inference_mode():
                held_logits = network(held_out[0]).squeeze(1)
                held_loss = float((loss_function(held_logits, held_out[1]) * held_out[2]).sum())
            if held_loss < best_loss - 1e-6:
                best_loss, best_epoch = held_loss, epoch
                best_state = {name: tensor.detach().clone() for name, tensor in network.state_dict().items()}
            elif epoch >= MIN_EPOCHS and epoch - best_epoch >= PATIENCE:
                break
    finally:
        if small:
            torch.set_num_threads(threads)
    if best_state is not None:
        network.load_state_dict(best_state)
    else:
        best_epoch = limit
    network.eval()
    return Head(network, mean.to(device), scale.to(device), device, best_epoch)
