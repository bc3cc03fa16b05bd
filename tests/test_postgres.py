"""The same store and cascade on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from lsun_crowd import ledger
from lsun_crowd.project import Project
from lsun_crowd.schema import SCHEMA_VERSION, Item, Meta, Spend, SpendKind, Vote
from lsun_crowd.store import Store, category_id, insert_ignoring_duplicates, insert_returning
from lsun_crowd.testing import update_project

from .conftest import make_digits_project
from .postgres import fresh_database, postgres_server


@pytest.fixture(scope="module")
def postgres_server_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server_url: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the shared server for each test."""
    return fresh_database(postgres_server_url, "test_" + request.node.name.lower()[:50])


def test_store_on_postgres(postgres_url: str) -> None:
    store = Store(postgres_url)
    assert store.engine.dialect.name == "postgresql"
    with store.session() as session:
        assert session.get(Meta, "schema_version").value == str(SCHEMA_VERSION)  # type: ignore[union-attr]
        row = {"sha256": "f" * 64, "uri": "/a.png", "width": 1, "height": 1}
        insert_ignoring_duplicates(session, Item, [row, row])
        insert_ignoring_duplicates(session, Item, [row])
        assert category_id(session, "kitchen") == category_id(session, "kitchen")
    with store.session() as session:
        assert session.scalar(select(func.count(Item.id)).where(Item.sha256 == "f" * 64)) == 1
    store.close()


# Texts an array's literal form must escape: separators, braces, quotes, backslashes, the word NULL.
AWKWARD_TEXTS = ["plain", "a,b", "{braces}", 'say "hi"', "back\\slash", "NULL", "", "ünïcode ✓", "two\nlines"]


def test_bulk_inserts_keep_every_value_and_go_as_one_statement_on_postgres(postgres_url: str) -> None:
    """PostgreSQL's bulk inserts send one array a column: every value comes back as it went in,
    duplicates are skipped (within the rows too), and a chunk is one statement, not one per row."""
    store = Store(postgres_url)
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda _c, _cur, sql, *_rest: statements.append(sql))
    items = [
        {
            "sha256": f"{number:064x}",
            "uri": f"{AWKWARD_TEXTS[number % len(AWKWARD_TEXTS)]}/{number}",
            "width": number,
            "height": -number,
            "file_size": 2**40 + number if number % 3 else None,  # past 32 bits, and empty
            "file_mtime_ns": None,  # a column empty in every row
            "problem": AWKWARD_TEXTS[number % len(AWKWARD_TEXTS)] if number % 2 else None,
        }
        for number in range(20_000)
    ]
    with store.session() as session:
        statements.clear()
        added = insert_returning(session, Item, [*items, items[0], items[1]], Item.id)
        assert len(statements) == 1
        assert len(added) == len(set(added)) == 20_000
        assert insert_ignoring_duplicates(session, Item, items[:500]) == 0
    with store.session() as session:
        stored = session.execute(
            select(
                Item.sha256, Item.uri, Item.width, Item.height, Item.file_size, Item.file_mtime_ns, Item.problem
            ).order_by(Item.id)
        ).all()
        assert [tuple(row) for row in stored] == [tuple(item.values()) for item in items]
        stamps = session.scalars(select(Item.added_at).distinct()).all()
        assert len(stamps) == 1 and stamps[0].tzinfo is not None  # the column's default, once
    spend = [
        {"reference": f"batch-{n}", "kind": SpendKind.FEE, "amount": Decimal("0.0125") * n, "round_id": None}
        for n in range(5)
    ]
    with store.session() as session:
        assert insert_ignoring_duplicates(session, Spend, spend) == 5
        assert insert_ignoring_duplicates(session, Spend, spend) == 0
        with pytest.raises(ValueError, match="must all name the same columns"):
            insert_ignoring_duplicates(session, Spend, [*spend, {"reference": "x", "kind": "fee", "amount": 1}])
    with store.session() as session:
        kept = session.execute(select(Spend.reference, Spend.kind, Spend.amount).order_by(Spend.id)).all()
    assert [tuple(row) for row in kept] == [(row["reference"], row["kind"], row["amount"]) for row in spend]
    store.close()


def test_cascade_round_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "project"
    make_digits_project(directory, limit=300, digits=range(1), sample=100)
    update_project(directory, {"project": {"database_url": postgres_url}})
    # The project was ingested into SQLite by the helper; ingest again, now into PostgreSQL.
    project = Project.open(directory)
    assert project.store.engine.dialect.name == "postgresql"
    from lsun_crowd.ingest import ingest, ingest_gold

    ingest(project.store, [directory / "images"], directory / "downloads")
    ingest_gold(project.store, directory / "gold.csv")
    outcome = project.cascade(project.crowd()).run(max_rounds=2)[0]
    assert outcome.rounds == 2
    with project.store.session() as session:
        votes = session.scalar(select(func.count(Vote.id)))
    assert votes and votes > 500
    # Running again after the round limit adds nothing: every write is replay-safe on PostgreSQL too.
    project.cascade(project.crowd()).run(max_rounds=2)
    with project.store.session() as session:
        assert session.scalar(select(func.count(Vote.id))) == votes


def _rows_read_from(plan: dict[str, Any], table: str) -> int:
    """Rows every scan of ``table`` in an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan produced."""
    own = plan["Actual Rows"] * plan["Actual Loops"] if plan.get("Relation Name") == table else 0
    return int(own) + sum(_rows_read_from(child, table) for child in plan.get("Plans", []))


def test_a_pass_over_the_pool_reads_each_image_once_before_any_statistics(postgres_url: str) -> None:
    """Read right after a bulk ingest, before PostgreSQL has analyzed the items table, a pass over
    the pool reads each image about once. (With the pool test in each page's WHERE clause, the
    planner expected a handful of rows to pass it and sorted all of the rest of the table for every
    page: 30 pages of 1,000 read 465,000 rows.)"""
    images, window = 30_000, 1_000
    store = Store(postgres_url)
    with store.session() as session:
        session.execute(text("ALTER TABLE items SET (autovacuum_enabled = false)"))
        cat = category_id(session, "cat")
        rows = [{"sha256": f"{n:064x}", "uri": f"/i/{n}.png", "width": 8, "height": 8} for n in range(images)]
        insert_ignoring_duplicates(session, Item, rows)
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "items" in statement:
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    with store.session() as session:
        pooled = sum(len(chunk) for chunk in ledger.iter_pool(session, cat, size=window))
    event.remove(store.engine, "before_cursor_execute", capture)
    assert pooled == images
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT reltuples FROM pg_class WHERE relname = 'items'")).scalar() == -1
        read = sum(
            _rows_read_from(
                connection.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters).scalar()[0][
                    "Plan"
                ],
                "items",
            )
            for statement, parameters in seen
        )
    assert images <= read <= 1.05 * images
    store.close()
