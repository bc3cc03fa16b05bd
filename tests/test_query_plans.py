"""Every query ``status``, ``export`` and the pool's reads make finds its rows through an index:
SQLite's plan for each statement they execute never scans a table that grows with the pool."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import event

from lsun_crowd import ledger
from lsun_crowd.export import export
from lsun_crowd.schema import Gold, Item
from lsun_crowd.status import category_status
from lsun_crowd.store import Store, category_id, insert_ignoring_duplicates

# Tables whose rows grow with the pool (images, or images × categories).
POOL_TABLES = ("items", "labels", "votes", "round_items", "label_events", "hit_items")  # gold stays small
FULL_SCAN = re.compile(rf"^SCAN ({'|'.join(POOL_TABLES)})\b(?! USING (COVERING )?INDEX)")


def filled(directory: Path) -> tuple[Store, int]:
    store = Store(f"sqlite:///{directory / 'store.db'}")
    with store.session() as session:
        insert_ignoring_duplicates(
            session,
            Item,
            [{"sha256": f"{n:064x}", "uri": f"/images/{n}.png", "width": 8, "height": 8} for n in range(2_000)],
        )
        cat = category_id(session, "cat")
        category_id(session, "dog")
        insert_ignoring_duplicates(session, Gold, [{"item_id": n, "category_id": cat, "answer": n % 2} for n in (1, 2)])
        ledger.record_labels(
            session, cat, [ledger.NewLabel(n, n % 5 == 0, 0.9) for n in range(3, 1_500)], source="model", origin="m"
        )
    return store, cat


def plans_of(store: Store, work: Any) -> list[tuple[str, str]]:
    """(statement, plan line) for every SELECT that ``work()`` executes."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and not many:
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        work()
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    lines = []
    with store.engine.connect() as connection:
        for statement, parameters in seen:
            for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters):
                lines.append((statement, str(row[-1])))
    return lines


def test_status_export_and_the_pool_never_scan_a_pool_sized_table(tmp_path: Path) -> None:
    store, cat = filled(tmp_path)

    def work() -> None:
        category_status(store, ["cat", "dog"])
        export(store, tmp_path / "labels.jsonl")
        with store.session() as session:
            for _ in ledger.iter_pool(session, cat, size=300):
                pass

    plans = plans_of(store, work)
    assert len(plans) > 20  # the work above really ran its queries
    scans = [(statement, line) for statement, line in plans if FULL_SCAN.search(line)]
    assert scans == [], "\n\n".join(f"{line}\n  in {statement}" for statement, line in scans)
    store.close()
