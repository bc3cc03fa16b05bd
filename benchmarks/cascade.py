"""The demo cascade over several seeds, adaptive and fixed redundancy: precision, recall, unlabeled
share, votes, human-label accuracy, money, time (per run).

python benchmarks/cascade.py [--seeds 0 1 2] [--without-consensus] [--no-compare]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console

from lsun_crowd.demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--without-consensus", action="store_true", help="quality.model_consensus = false")
    parser.add_argument("--no-compare", action="store_true", help="skip adaptive against fixed redundancy")
    args = parser.parse_args()
    quiet = Console(quiet=True)
    extra = "[quality]\nmodel_consensus = false\n" if args.without_consensus else ""
    runs = {}
    kind = "people alone" if args.without_consensus else "model-aware consensus"
    print(f"whole cascade (the demo's defaults: adaptive redundancy; human labels by {kind}):")
    print(
        f"{'seed':>4} {'precision':>9} {'recall':>7} {'unlabeled':>9} {'votes':>7} {'votes/img':>9} "
        f"{'human':>6} {'wrong':>5} {'human acc':>9} {'USD':>7} {'seconds':>8}  lowest category precision"
    )
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            runs[seed] = run_demo(Path(out), seed=seed, console=quiet, compare=not args.no_compare, extra=extra)
            seconds = time.perf_counter() - start
        run = runs[seed][0]
        total = run.total
        lowest = min(run.scores, key=lambda score: score.precision)
        below = sum(score.precision < 0.97 for score in run.scores)
        print(
            f"{seed:>4} {total.precision:>9.3f} {total.recall:>7.3f} {total.unlabeled_share:>9.2%} "
            f"{total.votes:>7} {total.votes_per_resolved:>9.3f} {run.humans.labeled:>6} {run.humans.wrong:>5} "
            f"{run.humans.accuracy:>9.4f} {run.spent:>7.2f} {seconds:>8.1f}  "
            f"{lowest.precision:.3f} ({lowest.category}; {below} below 0.97)"
        )
    if args.no_compare:
        return
    print("\nhumans alone on the first 300 digits, every category, adaptive against fixed redundancy:")
    print(f"{'seed':>4} {'redundancy':<24} {'labeled':>7} {'wrong':>5} {'accuracy':>8} {'votes':>6} {'USD':>6}")
    for seed, (_, comparison) in runs.items():
        for name, result in comparison.items():
            print(
                f"{seed:>4} {name:<24} {result.labeled:>7} {result.wrong:>5} {result.accuracy:>8.4f} "
                f"{result.votes:>6} {result.spent:>6.2f}"
            )


if __name__ == "__main__":
    main()
