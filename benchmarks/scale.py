"""A synthetic pool of a million images through one round, its split, ``status`` and ``export``.

    python benchmarks/scale.py --items 1000000 --categories 1

Prints the wall time of each stage and the process's peak memory after it. The pool is synthetic
(:mod:`lsun_crowd.synthetic`): items, embeddings and truth without image files, so what is measured
is the store, the runner, the simulated crowd, training, scoring and the split.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from lsun_crowd_mock import CrowdMix, SimulatedCrowd

from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.export import export
from lsun_crowd.loop import Cascade
from lsun_crowd.progress import Progress
from lsun_crowd.project import Project
from lsun_crowd.status import category_status
from lsun_crowd.synthetic import SyntheticPool, build
from lsun_crowd.testing import write_project


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stamps(Progress):
    """The cascade's messages with the time each arrived."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []

    def message(self, text: str) -> None:
        self.lines.append((time.perf_counter(), text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--categories", type=int, default=1)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="project folder (default: a temporary one)")
    args = parser.parse_args()
    directory = args.out or Path(tempfile.mkdtemp(prefix="lsun-crowd-scale-"))
    names = tuple(f"c{index}" for index in range(args.categories))
    pool = SyntheticPool(args.items, names, dim=args.dim, positive_rate=0.2, separation=4.0, seed=args.seed)
    write_project(
        directory,
        {
            "project": {"name": "scale", "seed": args.seed, "categories": list(names)},
            "crowd": {"adapter": "mock", "poll_seconds": 0, "reward_per_assignment": 0.01},
            "model": {"hidden_units": 0, "epochs": 60},
            "cascade": {"sample_per_round": args.sample, "budget": 10_000},
        },
    )
    project = Project.open(directory)
    print(f"{args.items:,} items × {args.categories} categories, dim {args.dim}, in {directory}")
    rows: list[tuple[str, float, float]] = []

    start = time.perf_counter()
    cache = EmbeddingCache(directory / "cache" / "synthetic", pool.dim)
    build(pool, project.store, cache)
    rows.append(("build pool (items, gold, embeddings)", time.perf_counter() - start, peak_mb()))

    stamps = Stamps()
    crowd = SimulatedCrowd(pool.truth(), CrowdMix(seed=args.seed), directory / "mock-crowd.sqlite")
    start = time.perf_counter()
    outcomes = Cascade(project.config, project.store, crowd, lambda: cache, stamps).run(max_rounds=1)
    total = time.perf_counter() - start
    split_started = max(
        (stamp for stamp, text in stamps.lines if "labeled by humans" in text and "uncertain" not in text),
        default=start,
    )
    finished = max(stamp for stamp, _ in stamps.lines)
    rows.append(("round 1: sample, publish, collect, review, label", split_started - start, peak_mb()))
    rows.append(("round 1: train, score the pool, split, write labels", finished - split_started, peak_mb()))
    rows.append(("round 1 in all", total, peak_mb()))

    start = time.perf_counter()
    status = category_status(project.store, list(names))
    rows.append(("status", time.perf_counter() - start, peak_mb()))
    start = time.perf_counter()
    count = export(project.store, directory / "export.jsonl")
    rows.append((f"export ({count:,} records)", time.perf_counter() - start, peak_mb()))

    for outcome in outcomes:
        print(f"{outcome.category}: {outcome.reason} after {outcome.rounds} round(s)")
    for row in status:
        print(f"{row.category}: {row.positive:,} positive, {row.negative:,} negative, {row.unlabeled:,} unlabeled")
    print(f"{'stage':<55} {'seconds':>9} {'peak MB':>9}")
    for stage, seconds, memory in rows:
        print(f"{stage:<55} {seconds:>9.1f} {memory:>9.0f}")
    project.close()


if __name__ == "__main__":
    main()
