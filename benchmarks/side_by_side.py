"""Ten categories side by side against each category alone, in the simulated crowd's virtual time.

    python benchmarks/side_by_side.py --limit 1797 --sample 300

The simulated crowd's latency is measured on its virtual clock (``tick_seconds`` per poll of the
runner), so the figures are hours a real crowd with that latency would take, not seconds of this
machine. Before jobs and the runner, categories ran one after another: the virtual time of ten
was the sum of each alone. ``tests/test_runner.py`` runs a reduced form of this.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lsun_crowd_mock import SimulatedCrowd

from lsun_crowd.project import Project
from lsun_crowd.testing import digits_project


def run(directory: Path) -> tuple[float, int, float]:
    """Virtual hours until every category is finished, votes, and wall seconds."""
    project = Project.open(directory)
    crowd = project.crowd()
    assert isinstance(crowd, SimulatedCrowd)
    started = time.perf_counter()
    outcomes = project.cascade(crowd).run()
    wall = time.perf_counter() - started
    assert all(outcome.reason == "resolved" for outcome in outcomes), outcomes
    with project.store.engine.connect() as connection:
        votes = int(connection.exec_driver_sql("SELECT COUNT(*) FROM votes").scalar() or 0)
    project.close()
    return crowd.clock_seconds() / 3600, votes, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=1797, help="digit images in the pool")
    parser.add_argument("--sample", type=int, default=300, help="images per round")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lsun-crowd-side-by-side-"))
    common = {"limit": args.limit, "seed": args.seed, "sample_per_round": args.sample}

    digits_project(root / "together", digits=range(10), **common)
    together, together_votes, together_wall = run(root / "together")
    alone = []
    for digit in range(10):
        directory = root / f"digit-{digit}"
        digits_project(directory, digits=range(digit, digit + 1), **common)
        alone.append(run(directory))
        print(f"digit-{digit} alone: {alone[-1][0]:.1f} virtual hours, {alone[-1][1]} votes")
    slowest = max(hours for hours, _, _ in alone)
    serial = sum(hours for hours, _, _ in alone)
    print(f"ten categories side by side: {together:.1f} virtual hours, {together_votes} votes, {together_wall:.0f} s")
    print(f"slowest category alone:      {slowest:.1f} virtual hours ({together / slowest:.2f}× of it)")
    print(f"one after another (the sum): {serial:.1f} virtual hours ({serial / together:.1f}× side by side)")
    print(f"alone, wall seconds in all:  {sum(wall for _, _, wall in alone):.0f} s")


if __name__ == "__main__":
    main()
