"""Seeded SIGKILLs at every stage of the cascade, each resumed, every invariant checked.

    python benchmarks/crash.py --chains 6 --run-kills 8 --out /tmp/crash

One uninterrupted reference run counts how often each kill point is passed; then every chain
builds the same project and runs ``ingest``, ``ingest --gold``, ``run`` and ``audit``, killed at
points drawn from its seed (see :mod:`lsun_crowd.crash_harness`), resumes each time, and is
compared with the reference: stores equal table by table, the platform's HITs, bonuses and money
equal to the store's. Prints one line per chain and the kill points survived by stage.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from lsun_crowd.crash_harness import check, count_passes, draw_kills, make_project, run_chain

COMMANDS = ("ingest", "gold", "run", "audit")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=6)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--run-kills", type=int, default=8, help="kill points per chain in `run`")
    parser.add_argument("--audit-kills", type=int, default=2)
    parser.add_argument("--ingest-kills", type=int, default=1)
    parser.add_argument("--limit", type=int, default=500, help="digit images in the pool")
    parser.add_argument("--digits", type=int, default=2, help="categories")
    parser.add_argument("--sample", type=int, default=120, help="images sampled a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--audit-sample", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("crash-out"))
    args = parser.parse_args()

    shutil.rmtree(args.out, ignore_errors=True)
    shape = {"limit": args.limit, "digits": args.digits, "sample": args.sample, "rounds": args.rounds}
    reference = args.out / "reference"
    make_project(reference, **shape)
    started = time.monotonic()
    passes = count_passes(reference, COMMANDS, args.audit_sample)
    print(f"reference run: {time.monotonic() - started:.0f} s; passes per point:")
    for command, points in passes.items():
        print(f"  {command}: " + ", ".join(f"{point} {count}" for point, count in points.items()))

    per_command = {"ingest": args.ingest_kills, "gold": 0, "run": args.run_kills, "audit": args.audit_kills}
    survived: Counter[str] = Counter()
    failed = 0
    for seed in range(args.first_seed, args.first_seed + args.chains):
        project = args.out / f"chain-{seed}"
        make_project(project, **shape)
        kills = draw_kills(seed, per_command, passes)
        chain = run_chain(project, seed, kills, COMMANDS, args.audit_sample)
        chain.differences = check(project, reference)
        verdict = "every invariant held" if chain.held else "; ".join(chain.differences)
        print(
            f"chain {seed}: {len(chain.kills)} kills ({', '.join(chain.kills)}), "
            f"{len(chain.not_reached)} not reached ({', '.join(chain.not_reached)}), {chain.seconds:.0f} s: {verdict}"
        )
        failed += not chain.held
        if chain.held:
            survived.update(kill.split(" ", 1)[1].rsplit(":", 1)[0] for kill in chain.kills)
    print(f"kill points survived: {sum(survived.values())} over {len(survived)} points; chains failed: {failed}")
    for point, count in sorted(survived.items()):
        print(f"  {point}: {count}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
