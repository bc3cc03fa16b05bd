"""``status`` and ``export`` on a store of a million images in ten categories, every image labeled.

    python benchmarks/store_scale.py --items 1000000 --categories 10 [--database-url URL]

The store is filled directly (items, and one current label per image and category: a tenth of them
by people, the rest by the model, and the label counts the ledger keeps), which takes minutes;
then ``lsun-crowd status`` and ``lsun-crowd export`` run as separate processes, each timed with
its peak memory, so neither pays for the other's imports or for the build. Prints seconds and peak MB for each.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lsun_crowd.ledger import CHUNK
from lsun_crowd.schema import Item, Label
from lsun_crowd.store import Store, category_id, recount_labels
from lsun_crowd.testing import write_project


def fill(store: Store, items: int, categories: int, seed: int) -> None:
    generator = np.random.default_rng(seed)
    with store.session() as session:
        ids = [category_id(session, f"c{index}") for index in range(categories)]
    for start in range(0, items, CHUNK):
        numbers = range(start, min(start + CHUNK, items))
        with store.session() as session:
            session.execute(
                Item.__table__.insert(),
                [
                    {
                        "sha256": hashlib.sha256(str(number).encode()).hexdigest(),
                        "uri": f"synthetic://{number}",
                        "width": 0,
                        "height": 0,
                    }
                    for number in numbers
                ],
            )
    for cat in ids:
        for start in range(0, items, CHUNK):
            count = min(CHUNK, items - start)
            labels = generator.random(count) < 0.2
            human = generator.random(count) < 0.1
            with store.session() as session:
                session.execute(
                    Label.__table__.insert(),
                    [
                        {
                            "item_id": start + offset + 1,
                            "category_id": cat,
                            "label": int(labels[offset]),
                            "source": "human" if human[offset] else "model",
                            "round_id": None,
                            "confidence": 0.99,
                            "votes": 3 if human[offset] else 0,
                        }
                        for offset in range(count)
                    ],
                )
    with store.session() as session:
        recount_labels(session)  # what lsun_crowd.ledger keeps as it writes


def timed(command: list[str]) -> tuple[float, float]:
    """Seconds and peak MB of one command run in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--categories", type=int, default=10)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    directory = args.out or Path(tempfile.mkdtemp(prefix="lsun-crowd-store-"))
    names = [f"c{index}" for index in range(args.categories)]
    project: dict[str, object] = {"name": "store-scale", "categories": names}
    if args.database_url:
        project["database_url"] = args.database_url
    write_project(directory, {"project": project})
    started = time.perf_counter()
    store = Store.for_project(directory, args.database_url)
    fill(store, args.items, args.categories, args.seed)
    store.close()
    print(f"filled {args.items:,} items × {args.categories} categories in {time.perf_counter() - started:.1f}s")
    command = [sys.executable, "-m", "lsun_crowd.cli"]
    # Peaks of children are a running maximum, so the lighter command runs first.
    status = timed([*command, "status", "--project", str(directory)])
    export = timed([*command, "export", "--out", str(directory / "labels.jsonl"), "--project", str(directory)])
    print(f"{'command':<10} {'seconds':>9} {'peak MB':>9}")
    print(f"{'status':<10} {status[0]:>9.2f} {status[1]:>9.0f}")
    print(f"{'export':<10} {export[0]:>9.2f} {export[1]:>9.0f}")


if __name__ == "__main__":
    main()
