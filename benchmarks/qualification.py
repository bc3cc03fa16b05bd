"""The qualification test on the simulated crowd: people alone label the first 300 digits in every
category, with and without a test before a worker's first HIT (adaptive redundancy both times).

python benchmarks/qualification.py [--seeds 0 1 2] [--items 6] [--pass-mark 0.8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console

from lsun_crowd.demo import COMPARISON_IMAGES, run_project


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--pass-mark", type=float, default=0.8)
    args = parser.parse_args()
    policies = {
        "no test": "",
        f"test: {args.items} items, pass {args.pass_mark:g}": (
            f"[quality]\nqualification_items = {args.items}\nqualification_pass = {args.pass_mark}\n"
        ),
    }
    print(f"humans alone on the first {COMPARISON_IMAGES} digits, every category:")
    print(f"{'seed':>4} {'policy':<26} {'labeled':>7} {'wrong':>5} {'accuracy':>8} {'votes':>6} {'USD':>6}")
    for seed in args.seeds:
        for name, extra in policies.items():
            with tempfile.TemporaryDirectory() as out:
                humans = run_project(Path(out), seed, Console(quiet=True), "", COMPARISON_IMAGES, extra).humans
            print(
                f"{seed:>4} {name:<26} {humans.labeled:>7} {humans.wrong:>5} {humans.accuracy:>8.4f} "
                f"{humans.votes:>6} {humans.spent:>6.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
