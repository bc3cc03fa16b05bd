"""How often the final dataset misses its targets: seeded cascades on simulated pools.

Each run is a whole cascade (runner, simulated crowd, Dawid–Skene, training, split) on a synthetic
pool whose truth is known, at the default guarantee settings (confidence 0.95, precision 0.97,
NPV 0.995, recall 0.9). Runs vary the seed, the pool's size and positive rate, and the model's
strength (how far apart the classes lie in embedding space). After the run, the realized
precision of ALL the category's auto-positives and the NPV of all its auto-negatives are measured
against the truth, and the share of true positives the auto-negatives discarded.

With ``--old-rule`` every run is repeated with the rule used before issue 11 (the loosest
threshold whose Clopper–Pearson bound at confidence 0.5 meets the target, scanning every
candidate), on the same pools, crowd and calibration samples.

    python benchmarks/guarantee.py --runs 200 --jobs 2 --old-rule
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from lsun_crowd_mock import CrowdMix, SimulatedCrowd
from scipy.stats import beta
from sqlalchemy import func, select

from lsun_crowd import autolabel
from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.guarantee import Calibration, SideTest
from lsun_crowd.loop import Cascade
from lsun_crowd.project import Project
from lsun_crowd.schema import GuaranteeSide, Item, Label, LabelSource
from lsun_crowd.synthetic import SyntheticPool, build
from lsun_crowd.testing import write_project

POOLS = (4_000, 6_000, 8_000)
POSITIVE_RATES = (0.01, 0.1, 0.3)
SEPARATIONS = (3.0, 4.5, 6.0)  # model strength: distance between the classes, in noise units
NEW_RULE = (autolabel.certify_positive, autolabel.certify_negative)
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None  # stores in memory: no fsync cost


@dataclass(frozen=True)
class RunResult:
    seed: int
    rule: str
    items: int
    positive_rate: float
    separation: float
    auto_positive: int
    auto_negative: int
    precision: float  # nan without auto-positives
    npv: float
    recall_kept: float  # share of true positives not discarded by auto-negatives
    unlabeled: int
    seconds: float


def run(seed: int, old_rule: bool, rounds: int) -> RunResult:
    items = POOLS[seed % len(POOLS)]
    rate = POSITIVE_RATES[(seed // len(POOLS)) % len(POSITIVE_RATES)]
    separation = SEPARATIONS[(seed // 9) % len(SEPARATIONS)]
    # The rule is swapped in the worker process for this run only.
    autolabel.certify_positive = old_positive if old_rule else NEW_RULE[0]  # type: ignore[assignment]
    autolabel.certify_negative = old_negative if old_rule else NEW_RULE[1]  # type: ignore[assignment]
    torch.set_num_threads(1)  # processes side by side, one core each
    started = time.perf_counter()
    pool = SyntheticPool(
        items=items, categories=("thing",), dim=8, positive_rate=rate, separation=separation, seed=seed
    )
    with tempfile.TemporaryDirectory(dir=SCRATCH) as directory:
        root = Path(directory)
        write_project(
            root,
            {
                "project": {"name": "guarantee", "seed": seed, "categories": ["thing"]},
                "crowd": {"adapter": "mock", "poll_seconds": 0, "reward_per_assignment": 0.01},
                "model": {"hidden_units": 0, "epochs": 400},
                "cascade": {"sample_per_round": 2000, "calibration_fraction": 0.6, "budget": 10_000},
                # Repair revises human labels only; the guarantee is about the model's.
                "repair": {"enabled": False},
            },
        )
        project = Project.open(root)
        cache = EmbeddingCache(root / "cache" / "synthetic", pool.dim)
        build(pool, project.store, cache)
        crowd = SimulatedCrowd(pool.truth(), CrowdMix(seed=seed), root / "mock-crowd.sqlite")
        Cascade(project.config, project.store, crowd, lambda: cache).run(max_rounds=rounds)
        truth = pool.truth()
        counts = {(label, right): 0 for label in (0, 1) for right in (False, True)}
        with project.store.session() as session:
            rows = session.execute(
                select(Item.uri, Label.label)
                .join(Label, Label.item_id == Item.id)
                .where(Label.source == LabelSource.MODEL)
            )
            for uri, label in rows:
                counts[(label, truth(uri, "thing") == bool(label))] += 1
            labeled = session.scalar(select(func.count(Label.id))) or 0
        numbers = np.arange(items, dtype=np.int64)
        positives = int(pool.truth_matrix(numbers)[:, 0].sum())
        project.close()
    auto_positive = counts[(1, True)] + counts[(1, False)]
    auto_negative = counts[(0, True)] + counts[(0, False)]
    return RunResult(
        seed,
        "old" if old_rule else "ltt",
        items,
        rate,
        separation,
        auto_positive,
        auto_negative,
        counts[(1, True)] / auto_positive if auto_positive else math.nan,
        counts[(0, True)] / auto_negative if auto_negative else math.nan,
        1 - counts[(0, False)] / positives if positives else 1.0,
        max(0, items - labeled - 20),  # 20 gold images are labeled already
        time.perf_counter() - started,
    )


def _old_bound(right: np.ndarray, n: np.ndarray) -> np.ndarray:
    return np.where(right > 0, beta.ppf(0.5, np.maximum(right, 1e-12), n - right + 1), 0.0)


def old_positive(calibration: Calibration, target: float, delta: float) -> SideTest:
    """The rule before issue 11: the loosest cut whose bound at confidence 0.5 reaches the target."""
    resolved = calibration.labels >= 0
    order = np.argsort(-calibration.scores[resolved], kind="stable")
    scores = calibration.scores[resolved][order]
    right = np.cumsum(calibration.labels[resolved][order] == 1)
    n = np.arange(1, len(scores) + 1)
    ok = np.flatnonzero(np.append(scores[1:] != scores[:-1], True) & (_old_bound(right, n) >= target))
    side = GuaranteeSide.POSITIVE
    if len(ok) == 0:
        return SideTest(side, None, target, delta, None, calibration.size, calibration.unresolved)
    last = int(ok[-1])
    return SideTest(side, float(scores[last]), target, delta, None, calibration.size, 0, int(n[last]), 0, None)


def old_negative(
    calibration: Calibration, target: float, delta: float, recall_slack: float, below: float = math.inf
) -> SideTest:
    resolved = (calibration.labels >= 0) & (calibration.scores < below)
    order = np.argsort(calibration.scores[resolved], kind="stable")
    scores = calibration.scores[resolved][order]
    right = np.cumsum(calibration.labels[resolved][order] == 0)
    n = np.arange(1, len(scores) + 1)
    ok = np.flatnonzero(np.append(scores[1:] != scores[:-1], True) & (_old_bound(right, n) >= target))
    side = GuaranteeSide.NEGATIVE
    if len(ok) == 0:
        return SideTest(side, None, target, delta, None, calibration.size, calibration.unresolved)
    last = int(ok[-1])
    return SideTest(side, float(scores[last]), target, delta, None, calibration.size, 0, int(n[last]), 0, None)


def summarize(results: list[RunResult], rule: str) -> dict[str, float]:
    mine = [result for result in results if result.rule == rule]
    precision = [r.precision for r in mine if not math.isnan(r.precision)]
    npv = [r.npv for r in mine if not math.isnan(r.npv)]
    rare = [r for r in mine if r.positive_rate == 0.01]
    return {
        "runs": len(mine),
        "runs with auto-positives": len(precision),
        "precision miss rate": float(np.mean([p < 0.97 for p in precision])) if precision else 0.0,
        "runs with auto-negatives": len(npv),
        "NPV miss rate": float(np.mean([v < 0.995 for v in npv])) if npv else 0.0,
        "recall miss rate": float(np.mean([r.recall_kept < 0.9 for r in mine])),
        "lowest recall kept, 1% pools": min((r.recall_kept for r in rare), default=1.0),
        "auto-labeled share": float(np.mean([(r.auto_positive + r.auto_negative) / r.items for r in mine])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--old-rule", action="store_true", help="also run every seed with the old rule")
    parser.add_argument("--json", type=Path, help="append every run's figures here (JSON lines)")
    parser.add_argument("--summarize", type=Path, help="only print the figures of runs already in this file")
    args = parser.parse_args()
    if args.summarize:
        done = [RunResult(**json.loads(line)) for line in args.summarize.read_text().splitlines()]
        report(done, sorted({result.rule for result in done}, reverse=True))
        return
    seeds = range(args.first_seed, args.first_seed + args.runs)
    rules = [False, True] if args.old_rule else [False]
    started = time.perf_counter()
    results = []
    with ProcessPoolExecutor(args.jobs) as pool:
        # Both rules on a seed one after the other, so that runs cut short still compare like with like.
        futures = [pool.submit(run, seed, old, args.rounds) for seed in seeds for old in rules]
        for future in as_completed(futures):
            results.append(future.result())
            if args.json:  # every run as it ends, one JSON object per line
                with args.json.open("a") as handle:
                    handle.write(json.dumps(asdict(results[-1])) + "\n")
    print(f"{args.runs} seeded cascades per rule, {time.perf_counter() - started:.0f} s")
    report(results, ["ltt", "old"] if args.old_rule else ["ltt"])


def report(results: list[RunResult], rules: list[str]) -> None:
    for rule in rules:
        print(f"rule: {rule}")
        for name, value in summarize(results, rule).items():
            print(f"  {name:32s} {value:.4g}" if isinstance(value, float) else f"  {name:32s} {value}")


if __name__ == "__main__":
    main()
