"""Label-error repair on the demo: how many of the wrong human labels it flags, how many remain, and
the votes it costs. The simulated crowd's truth is the true digits, so every figure is checked.

python benchmarks/repair.py [--seeds 0 1 2] [--baseline] [--keep DIR]

With ``--baseline`` each seed runs a second time with ``[repair] enabled = false``, to compare the
wrong human labels, votes and money of the whole run with and without repair.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from sklearn.datasets import load_digits

from lsun_crowd.demo import run_project, shows_digit
from lsun_crowd.project import Project
from lsun_crowd.repair import RepairScore, score_against_truth

WITHOUT_REPAIR = "[repair]\nenabled = false\n"


def measure(
    seed: int, extra: str, console: Console, keep: Path | None = None
) -> tuple[RepairScore, int, Decimal, float]:
    """One demo run: its repair score, all its votes (gold aside), its spend and its seconds. With
    ``keep``, the project stays in ``keep/seed-N``."""
    with tempfile.TemporaryDirectory() as scratch:
        out = keep / f"seed-{seed}" if keep is not None else Path(scratch)
        start = time.perf_counter()
        run = run_project(out, seed, console, extra=extra)
        seconds = time.perf_counter() - start
        targets = load_digits().target
        project = Project.open(out)
        with project.store.session() as session:
            score = score_against_truth(session, lambda uri, category: shows_digit(targets, uri, category))
        project.close()
    return score, run.humans.votes, run.spent, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--baseline", action="store_true", help="also run each seed with repair off")
    parser.add_argument("--keep", type=Path, help="keep the projects (with repair) in this folder")
    args = parser.parse_args()
    quiet = Console(quiet=True)
    print("the demo with label-error repair (its defaults); wrong = against the true digits")
    print(
        f"{'seed':>4} {'human':>6} {'wrong':>5} {'flagged':>7} {'of wrong':>8} {'sent':>5} {'fixed/broke':>9} "
        f"{'wrong after':>11} {'final':>5} {'votes':>6} {'gold':>5} {'USD':>5} {'run votes':>9} {'run USD':>7} "
        f"{'seconds':>7}"
    )
    totals = [0, 0, 0, 0, 0]
    for seed in args.seeds:
        score, run_votes, spent, seconds = measure(seed, "", quiet, args.keep)
        totals = [
            totals[0] + score.wrong_before,
            totals[1] + score.flagged_wrong,
            totals[2] + score.wrong_after,
            totals[3] + score.votes,
            totals[4] + score.wrong_final,
        ]
        print(
            f"{seed:>4} {score.human_labels:>6} {score.wrong_before:>5} {score.flagged:>7} "
            f"{score.flagged_wrong:>3}/{score.wrong_before:<4} {score.sent:>5} "
            f"{score.changed_right:>4}/{score.changed_wrong:<4} {score.wrong_after:>11} {score.wrong_final:>5} "
            f"{score.votes:>6} {score.gold_votes:>5} {score.spent:>5.2f} {run_votes:>9} {spent:>7.2f} {seconds:>7.1f}"
        )
    wrong, caught, after, votes, final = totals
    print(
        f"all: flagged {caught} of {wrong} wrong human labels ({caught / max(wrong, 1):.0%}); "
        f"wrong after repair {after} ({after / max(wrong, 1):.0%} of before; {final} with every revision); "
        f"{votes} votes on the suspects"
    )
    if not args.baseline:
        return
    print("\nthe same seeds with repair off ([repair] enabled = false):")
    print(f"{'seed':>4} {'human':>6} {'wrong':>5} {'run votes':>9} {'run USD':>7} {'seconds':>7}")
    for seed in args.seeds:
        score, run_votes, spent, seconds = measure(seed, WITHOUT_REPAIR, quiet)
        print(f"{seed:>4} {score.human_labels:>6} {score.wrong_final:>5} {run_votes:>9} {spent:>7.2f} {seconds:>7.1f}")


if __name__ == "__main__":
    main()
