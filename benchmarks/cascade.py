"""The demo cascade over several seeds: precision, recall, unlabeled share, votes, time.

python benchmarks/cascade.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console

from lsun_crowd.demo import CategoryScore, run_demo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    quiet = Console(quiet=True)
    print(f"{'seed':>4} {'precision':>9} {'recall':>7} {'unlabeled':>9} {'votes':>7} {'votes/img':>9} {'seconds':>8}")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            scores = run_demo(Path(out), seed=seed, console=quiet)
            seconds = time.perf_counter() - start
        total = CategoryScore.combine("all", scores)
        print(
            f"{seed:>4} {total.precision:>9.3f} {total.recall:>7.3f} {total.unlabeled_share:>9.2%} "
            f"{total.votes:>7} {total.votes_per_resolved:>9.3f} {seconds:>8.1f}"
        )


if __name__ == "__main__":
    main()
