from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from lsun_crowd.testing import digits_project as build_digits_project
from lsun_crowd.testing import merge_config

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# No test touches the network: pretrained weights are never downloaded here, and a test missing
# them fails with the error that names the file (tests/test_weights.py serves its own, locally).
os.environ["LSUN_CROWD_OFFLINE"] = "1"


# What the tests of the cascade's mechanics run on a few hundred digits: targets loose enough for
# the model to label part of them (the defaults need more calibration images than such a pool
# holds: tests/test_guarantee_cascade.py runs them on a pool large enough), and no label-error repair
# unless a test asks for it (tests/test_repair.py).
SMALL_PROJECT = {
    "cascade": {
        "confidence": 0.5,
        "target_npv": 0.95,
        "target_recall": 0,
        "calibration_fraction": 0.5,
        "min_class_labels": 5,  # a first round of 100 digits holds about 10 of a category
    },
    "repair": {"enabled": False},
}


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """A script of ``benchmarks/`` (not a package) as a module, loaded once: tests run its reduced
    form, or use what it measures with."""
    key = f"benchmark_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def make_digits_project(
    directory: Path,
    limit: int = 600,
    digits: range = range(2),
    seed: int = 0,
    sample: int = 150,
    overrides: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """A small digits project with the simulated crowd, ingested and ready to run; ``overrides``
    are laid over the demo's settings (see :func:`lsun_crowd.testing.digits_config`) and
    :data:`SMALL_PROJECT`."""
    return build_digits_project(
        directory,
        limit=limit,
        digits=digits,
        seed=seed,
        sample_per_round=sample,
        overrides=merge_config(SMALL_PROJECT, overrides),
    )


@pytest.fixture
def digits_project(tmp_path: Path) -> Iterator[tuple[Path, np.ndarray]]:
    directory = tmp_path / "project"
    yield directory, make_digits_project(directory)
