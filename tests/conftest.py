from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lsun_crowd.testing import digits_project as build_digits_project

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_digits_project(
    directory: Path,
    limit: int = 600,
    digits: range = range(2),
    seed: int = 0,
    sample: int = 150,
    overrides: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """A small digits project with the simulated crowd, ingested and ready to run; ``overrides``
    are laid over the demo's settings (see :func:`lsun_crowd.testing.digits_config`)."""
    return build_digits_project(
        directory, limit=limit, digits=digits, seed=seed, sample_per_round=sample, overrides=overrides
    )


@pytest.fixture
def digits_project(tmp_path: Path) -> Iterator[tuple[Path, np.ndarray]]:
    directory = tmp_path / "project"
    yield directory, make_digits_project(directory)
