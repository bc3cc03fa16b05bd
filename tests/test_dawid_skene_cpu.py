"""Dawid–Skene in numpy (the CPU fit) against the torch code it stands in for, and without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lsun_crowd.dawid_skene as tensor_code
from lsun_crowd import dawid_skene_cpu as numpy_code
from lsun_crowd.aggregate import Votes
from lsun_crowd.dawid_skene import dawid_skene
from lsun_crowd.dawid_skene_cpu import dawid_skene_cpu, runs_on_cpu


def simulated(seed: int, items: int = 3000, workers: int = 40, classes: int = 2) -> tuple[Votes, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, items)
    accuracy = rng.uniform(0.5, 0.95, workers)
    item = np.repeat(np.arange(items), 5)
    worker = rng.integers(0, workers, len(item))
    wrong = (truth[item] + rng.integers(1, classes, len(item))) % classes
    answer = np.where(rng.random(len(item)) < accuracy[worker], truth[item], wrong)
    votes = Votes(tuple(range(items)), tuple(range(workers)), tuple(range(classes)), item, worker, answer)
    return votes, truth


@pytest.mark.parametrize(
    ("classes", "settings"),
    [
        (2, {}),
        (3, {}),
        (2, {"known": {i: 0 for i in range(0, 200, 2)}}),
        (2, {"prior_correct": 2.0, "prior_wrong": 1.0, "worker_prior": {w: (3.0, 1.0) for w in range(10)}}),
        (2, {"max_iterations": 0}),
    ],
)
def test_numpy_matches_the_tensor_code_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, classes: int, settings: dict[str, object]
) -> None:
    votes, truth = simulated(0, classes=classes)
    if "known" in settings:
        settings = {"known": {i: int(truth[i]) for i in range(0, 200, 2)}}
    ours = dawid_skene_cpu(votes, **settings)  # type: ignore[arg-type]
    monkeypatch.setattr(tensor_code, "runs_on_cpu", lambda device: False)
    tensors = dawid_skene(votes, device="cpu", **settings)  # type: ignore[arg-type]
    # float64 sums against float32 ones: equal to float32's precision, and the same labels.
    np.testing.assert_allclose(ours.probabilities, tensors.probabilities, atol=2e-4)
    assert ours.labels().tolist() == tensors.labels().tolist()
    assert ours.confusion is not None and tensors.confusion is not None
    np.testing.assert_allclose(ours.confusion, tensors.confusion, atol=2e-4)
    assert ours.worker_accuracy == pytest.approx(tensors.worker_accuracy, abs=2e-4)
    assert ours.vote_counts.tolist() == tensors.vote_counts.tolist()
    assert (ours.labels() == truth).mean() > 0.85


def test_passes_in_slices_sum_to_the_same_posterior(monkeypatch: pytest.MonkeyPatch) -> None:
    votes, _ = simulated(1, classes=3)
    whole = dawid_skene_cpu(votes)
    monkeypatch.setattr(numpy_code, "VOTES_PER_PASS", 997)  # 16 slices, the last one short
    sliced = dawid_skene_cpu(votes)
    np.testing.assert_allclose(sliced.probabilities, whole.probabilities, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(dawid_skene_cpu(votes).probabilities, sliced.probabilities)  # repeatable


def test_the_device_setting() -> None:
    assert runs_on_cpu("cpu") and not runs_on_cpu("cuda")
    if sys.platform == "linux" and not Path("/proc/driver/nvidia").exists():
        assert runs_on_cpu(None) and runs_on_cpu("auto")


FIT_AND_LIST_TORCH = """
import sys
import numpy as np
from lsun_crowd.aggregate import Votes
from lsun_crowd.methods import METHODS
votes = Votes(("a", "b"), ("w", "v"), (0, 1), np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([1, 1, 0]))
print(METHODS["dawid-skene"](votes).labels().tolist(), "torch" in sys.modules)
"""


@pytest.mark.skipif(
    sys.platform != "linux" or Path("/proc/driver/nvidia").exists(), reason="a CUDA device may be present"
)
def test_the_default_fit_on_the_cpu_never_imports_torch() -> None:
    """Importing torch costs seconds and about half a gigabyte resident, more than reading,
    fitting and writing 5 million votes together."""
    result = subprocess.run(
        [sys.executable, "-c", FIT_AND_LIST_TORCH], capture_output=True, text=True, timeout=300, check=True
    )
    assert result.stdout.split("\n")[-2] == "[1, 0] False"
