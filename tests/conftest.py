from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lsun_crowd.config import CONFIG_FILE
from lsun_crowd.demo import demo_config, write_pool
from lsun_crowd.ingest import ingest, ingest_gold
from lsun_crowd.project import Project

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_digits_project(
    directory: Path,
    limit: int = 600,
    digits: range = range(2),
    seed: int = 0,
    extra: str = "",
    sample: int = 150,
    redundancy: str = "",
) -> np.ndarray:
    """A small digits project with the simulated crowd, ingested and ready to run."""
    directory.mkdir(parents=True, exist_ok=True)
    targets = write_pool(directory, seed, limit, digits)
    config = demo_config(seed, digits, extra, redundancy).replace(
        "sample_per_round = 300", f"sample_per_round = {sample}"
    )
    (directory / CONFIG_FILE).write_text(config)
    project = Project.open(directory)
    ingest(project.store, [directory / "images"], directory / "downloads")
    ingest_gold(project.store, directory / "gold.csv")
    project.close()
    return targets


@pytest.fixture
def digits_project(tmp_path: Path) -> Iterator[tuple[Path, np.ndarray]]:
    directory = tmp_path / "project"
    yield directory, make_digits_project(directory)
