"""Where a synthetic pool's build spends its time, at several sizes: the items' inserts (the
calls, not their commits), the embedding cache's appends, and the rest.

    python benchmarks/build_probe.py --items 500000 1000000 2000000

Each size builds one category (10% positives, 16 dimensions, ``lsun-crowd simulate``'s pool) into a
fresh SQLite store and cache in a temporary folder, in this process, one size after the other.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from lsun_crowd import synthetic
from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.store import Store


def timed(seconds: dict[str, float], key: str, function: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[key] += time.perf_counter() - started

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[500_000, 1_000_000])
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary stores go")
    args = parser.parse_args()
    seconds = {"insert": 0.0, "cache": 0.0}
    namespace = vars(synthetic)  # the build calls the insert through its module's own name
    namespace["insert_ignoring_duplicates"] = timed(seconds, "insert", namespace["insert_ignoring_duplicates"])
    EmbeddingCache.append = timed(seconds, "cache", EmbeddingCache.append)  # type: ignore[method-assign]
    print(f"{'items':>10} {'build s':>9} {'inserts s':>10} {'cache s':>8} {'rest s':>7}")
    for items in args.items:
        seconds.update(insert=0.0, cache=0.0)
        with tempfile.TemporaryDirectory(dir=args.dir) as directory:
            store = Store(f"sqlite:///{directory}/store.db")
            cache = EmbeddingCache(Path(directory) / "embeddings", 16)
            pool = synthetic.SyntheticPool(items=items, categories=("c0",), positive_rate=0.1, dim=16)
            started = time.perf_counter()
            synthetic.build(pool, store, cache)
            total = time.perf_counter() - started
            store.close()
        rest = total - seconds["insert"] - seconds["cache"]
        print(
            f"{items:>10,} {total:>9.1f} {seconds['insert']:>10.1f} {seconds['cache']:>8.1f} {rest:>7.1f}", flush=True
        )


if __name__ == "__main__":
    main()
