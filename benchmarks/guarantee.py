"""How often the final dataset misses its targets: seeded cascades at the defaults.

Each run is `lsun-crowd simulate` at `lsun-crowd init`'s defaults (runner, simulated crowd,
Dawid–Skene, training, rounds, one certification) on a pool whose truth is known. Runs vary the
seed, the pool's size, its positive rate and the model's strength (separation). After each run the
realized precision of ALL the category's model positives, the NPV of all its model negatives and
the share of its true positives those negatives hold are measured against the truth. Per side:
the share of runs where it labeled anything, and the share of those that missed the target, with
its Clopper–Pearson interval (the guarantee allows at most 1 - confidence = 5%).

    python benchmarks/guarantee.py --runs 300 --jobs 2
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import beta
from sqlalchemy import select

from lsun_crowd.project import Project
from lsun_crowd.schema import Item, Label, LabelSource
from lsun_crowd.simulate import RECIPE, Settings, simulate
from lsun_crowd.synthetic import SyntheticPool

POOLS = (5_000, 20_000, 50_000, 200_000)
POSITIVE_RATES = (0.01, 0.1, 0.3)
SEPARATIONS = (2.0, 3.0, 4.5, 6.0)


@dataclass(frozen=True)
class RunResult:
    seed: int
    items: int
    positive_rate: float
    separation: float
    auto_positive: int
    auto_negative: int
    precision: float  # nan without auto-positives
    npv: float
    lost: float  # share of the pool's positives among the model's negatives


def run(seed: int) -> RunResult:
    generator = np.random.default_rng(seed)
    settings = Settings(
        items=int(generator.choice(POOLS)),
        positive_rate=float(generator.choice(POSITIVE_RATES)),
        separation=float(generator.choice(SEPARATIONS)),
        seed=seed,
    )
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "sim"
        simulate(settings, out)
        truth = SyntheticPool.load(out / RECIPE).truth()
        project = Project.open(out)
        with project.store.session() as session:
            rows = session.execute(
                select(Item.uri, Label.label)
                .join(Label, Label.item_id == Item.id)
                .where(Label.source == LabelSource.MODEL)
            ).all()
        project.close()
        every = int(SyntheticPool.load(out / RECIPE).truth_matrix(np.arange(settings.items))[:, 0].sum())
    positives = [truth(uri, "c0") for uri, label in rows if label == 1]
    negatives = [truth(uri, "c0") for uri, label in rows if label == 0]
    return RunResult(
        seed,
        settings.items,
        settings.positive_rate,
        settings.separation,
        len(positives),
        len(negatives),
        float(np.mean(positives)) if positives else float("nan"),
        1 - float(np.mean(negatives)) if negatives else float("nan"),
        sum(negatives) / max(every, 1),
    )


def interval(misses: int, runs: int) -> str:
    low = beta.ppf(0.025, misses, runs - misses + 1) if misses else 0.0
    high = beta.ppf(0.975, misses + 1, runs - misses) if misses < runs else 1.0
    return f"{misses}/{runs} = {misses / max(runs, 1):.3f} [{low:.3f}, {high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.runs)
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, seeds))
    for result in results:
        print(result)
    labeled_positive = [r for r in results if r.auto_positive]
    labeled_negative = [r for r in results if r.auto_negative]
    print(f"runs: {len(results)}")
    print(
        f"positive side labeled in {len(labeled_positive) / len(results):.1%} of runs; precision < 0.97 in "
        f"{interval(sum(r.precision < 0.97 for r in labeled_positive), len(labeled_positive))}"
    )
    print(
        f"negative side labeled in {len(labeled_negative) / len(results):.1%} of runs; NPV < 0.995 in "
        f"{interval(sum(r.npv < 0.995 for r in labeled_negative), len(labeled_negative))}; recall < 0.9 in "
        f"{interval(sum(r.lost > 0.1 for r in labeled_negative), len(labeled_negative))}"
    )


if __name__ == "__main__":
    main()
