"""``lsun-crowd simulate`` with two probes: time in Python's garbage collector, and a chosen SQLite page cache.

    python benchmarks/simulate_probe.py [--sqlite-cache-mib 256] -- --items 1000000 --rounds 1

Everything after ``--`` goes to ``lsun-crowd simulate`` unchanged, in this process. At the end it
prints, per generation, how many collections ran and the seconds they took (``gc.callbacks``).
``--sqlite-cache-mib`` sets ``PRAGMA cache_size`` on every connection the store opens (SQLite's
default is 2 MiB), to see whether a stage is waiting on pages.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from typing import Any

from lsun_crowd import store


class CollectorTimer:
    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.collections[info["generation"]] += 1
            self.seconds[info["generation"]] += time.perf_counter() - self._started


def with_page_cache(mib: int) -> None:
    """Every store connection opened from now on gets a page cache of ``mib`` MiB."""
    configure = store._enable_sqlite_wal  # what Store registers for each new SQLite connection

    def configure_with_cache(connection: Any, record: Any) -> None:
        configure(connection, record)
        cursor = connection.cursor()
        cursor.execute(f"PRAGMA cache_size=-{mib * 1024}")
        cursor.close()

    store._enable_sqlite_wal = configure_with_cache  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sqlite-cache-mib", type=int, default=0, help="page cache per connection (0: SQLite's)")
    parser.add_argument("simulate", nargs=argparse.REMAINDER, help="-- then lsun-crowd simulate's options")
    args = parser.parse_args()
    if args.sqlite_cache_mib:
        with_page_cache(args.sqlite_cache_mib)
    timer = CollectorTimer()
    gc.callbacks.append(timer)
    from lsun_crowd.cli import app

    options = [option for option in args.simulate if option != "--"]
    try:
        app(["simulate", *options], standalone_mode=False)
    finally:
        gc.callbacks.remove(timer)
        for generation in range(3):
            print(
                f"generation {generation}: {timer.collections[generation]:,} collections, "
                f"{timer.seconds[generation]:.1f} s",
                file=sys.stderr,
            )


if __name__ == "__main__":
    main()
