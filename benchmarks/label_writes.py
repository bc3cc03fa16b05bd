"""A split's label writes on SQLite and PostgreSQL: the ledger's bulk inserts against SQLAlchemy's.

    python benchmarks/label_writes.py [--labels 200000] [--repeat 3]

Writes ``--labels`` model labels through ``ledger.record_labels``, what the split calls, in its
chunks of 20,000 (each a label event, a current label and the label counts, in one transaction),
into a store of as many images, two ways side by side in one process, interleaved:

- ``arrays``: as it is; on PostgreSQL each chunk goes as one ``INSERT ... SELECT`` from
  ``unnest`` of one array a column (``store._unnest_insert``);
- ``sqlalchemy``: the same calls with the store's inserts sent SQLAlchemy's way, as before the
  arrays: an ``executemany`` for the events, multi-row ``VALUES`` of a thousand rows with
  ``RETURNING`` for the current labels. On SQLite both ways are the same code, a control.

Each way writes into a category of its own, so both insert the same rows into tables of the
same size. Prints microseconds per label, the least of ``--repeat`` runs, and their ratio. On
PostgreSQL the server is a throwaway local one (``tests/postgres.py``, ``fsync=off``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from unittest.mock import patch

from sqlalchemy.orm import Session
from store_scale import fill  # this folder's

from lsun_crowd import ledger
from lsun_crowd.schema import Base
from lsun_crowd.store import Store, _dialect_insert, category_id


def sqlalchemys_insert(session: Session, model: type[Base], rows: Sequence[Mapping[str, Any]]) -> tuple[Any, Any]:
    """What ``store._insert`` sent before the arrays: SQLAlchemy's statement, every row's parameters."""
    return _dialect_insert(session, model).on_conflict_do_nothing(), [dict(row) for row in rows]


def write_all(store: Store, category: int, items: int, arrays: bool, origin: str) -> float:
    """Seconds to label every image of the store for ``category`` through the ledger, a
    transaction a chunk; with ``arrays`` off, PostgreSQL's inserts go SQLAlchemy's way."""
    started = time.perf_counter()
    with nullcontext() if arrays else patch("lsun_crowd.store._insert", sqlalchemys_insert):
        for start in range(0, items, ledger.CHUNK):
            labels = [ledger.NewLabel(n + 1, n % 2, 0.99) for n in range(start, min(start + ledger.CHUNK, items))]
            with store.session() as session:
                ledger.record_labels(session, category, labels, source="model", origin=origin, reason="benchmark")
    return time.perf_counter() - started


def measure(url: str, labels: int, repeat: int) -> dict[str, float]:
    store = Store(url)
    fill(store, labels, categories=0, seed=0)  # the images only
    best: dict[str, float] = {}
    for run in range(repeat):
        for name, arrays in (("arrays", True), ("sqlalchemy", False)):
            with store.session() as session:
                category = category_id(session, f"{name}-{run}")
            seconds = write_all(store, category, labels, arrays, f"benchmark:{run}")
            best[name] = min(best.get(name, seconds), seconds)
    store.close()
    return {name: 1e6 * seconds / labels for name, seconds in best.items()}


def report(database: str, figures: dict[str, float]) -> None:
    ratio = figures["sqlalchemy"] / figures["arrays"]
    print(
        f"{database:<10}  arrays {figures['arrays']:6.1f} us/label   sqlalchemy's way {figures['sqlalchemy']:6.1f}"
        f" us/label   ratio {ratio:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with TemporaryDirectory(prefix="lsun-crowd-label-writes-") as directory:
        report("SQLite", measure(f"sqlite:///{Path(directory) / 'store.db'}", args.labels, args.repeat))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from postgres import postgres_server

    with postgres_server() as url:
        report("PostgreSQL", measure(url, args.labels, args.repeat))


if __name__ == "__main__":
    main()
