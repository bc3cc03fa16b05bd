"""A category's pool read through its open rows (``ledger.settle_pool``) is the pool the live
predicate defines, through any mix of ingests, labels, gold answers, unreadable images and
waiting rounds; and once settled, reading it costs what is left of it, not the items table."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select, text, update

from lsun_crowd import ledger
from lsun_crowd.schema import SCHEMA_VERSION, Gold, Item, Meta, OpenItem, Round, RoundItem, RoundState
from lsun_crowd.store import Store, category_id, insert_ignoring_duplicates

CATEGORIES = ("cat", "dog")


class Pools:
    """A store with two categories, and the operations that move images in and out of a pool."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(exist_ok=True)
        self.store = Store(f"sqlite:///{directory / 'store.db'}")
        with self.store.session() as session:
            self.ids = [category_id(session, name) for name in CATEGORIES]
        self.added = 0
        self.rounds = 0
        self.writes = 0

    def ingest(self, count: int) -> None:
        rows = [
            {"sha256": f"{self.added + n:064x}", "uri": f"/images/{self.added + n}.png", "width": 8, "height": 8}
            for n in range(count)
        ]
        self.added += count
        with self.store.session() as session:
            insert_ignoring_duplicates(session, Item, rows)

    def label(self, cat: int, items: list[int]) -> None:
        self.writes += 1
        with self.store.session() as session:
            labels = [ledger.NewLabel(item, item % 2, 0.9) for item in items if item <= self.added]
            ledger.record_labels(session, cat, labels, source="model", origin=f"write {self.writes}")

    def gold(self, cat: int, item: int) -> None:
        if item <= self.added:
            with self.store.session() as session:
                insert_ignoring_duplicates(session, Gold, [{"item_id": item, "category_id": cat, "answer": 1}])

    def problem(self, item: int, problem: str | None) -> None:
        with self.store.session() as session:
            session.execute(update(Item).where(Item.id == item).values(problem=problem))

    def wait(self, cat: int, items: list[int]) -> None:
        """A round of the category takes ``items`` to people; the previous one ends."""
        self.rounds += 1
        with self.store.session() as session:
            session.execute(update(Round).where(Round.category_id == cat).values(state=RoundState.DONE))
            round_ = Round(category_id=cat, number=self.rounds, state=RoundState.PUBLISHED)
            session.add(round_)
            session.flush()
            session.add_all(RoundItem(round_id=round_.id, item_id=item, role="train") for item in set(items))

    def settle(self, cat: int) -> None:
        with self.store.session() as session:
            ledger.settle_pool(session, cat)

    def check(self) -> None:
        """Every read of every category's pool agrees with the predicate that defines it."""
        with self.store.session() as session:
            for cat in self.ids:
                truth = list(session.scalars(select(Item.id).where(ledger.in_pool(cat)).order_by(Item.id)))
                for size in (4, 1000):
                    chunks = list(ledger.iter_pool(session, cat, size=size))
                    assert [item for rows in chunks for item, _ in rows] == truth
                    assert all(len(rows) == size for rows in chunks[:-1])
                assert ledger.pool_size(session, cat) == len(truth)
                positions = np.arange(0, len(truth), 3, dtype=np.int64)
                assert ledger.pool_at(session, cat, positions).tolist() == [truth[p] for p in positions]


item_ids = st.integers(min_value=1, max_value=40)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("ingest"), st.integers(min_value=0, max_value=12)),
        st.tuples(st.just("label"), st.sampled_from((0, 1)), st.lists(item_ids, max_size=8)),
        st.tuples(st.just("gold"), st.sampled_from((0, 1)), item_ids),
        st.tuples(st.just("problem"), item_ids, st.sampled_from(("unreadable", None))),
        st.tuples(st.just("wait"), st.sampled_from((0, 1)), st.lists(item_ids, max_size=5)),
        st.tuples(st.just("settle"), st.sampled_from((0, 1))),
    ),
    max_size=14,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_the_pool_read_through_its_open_rows_is_the_pool_the_predicate_defines(steps: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        pools = Pools(Path(directory))
        pools.ingest(20)
        for step in steps:
            match step:
                case ("ingest", count):
                    pools.ingest(count)
                case ("label", cat, items):
                    pools.label(pools.ids[cat], items)
                case ("gold", cat, item):
                    pools.gold(pools.ids[cat], item)
                case ("problem", item, problem):
                    pools.problem(item, problem)
                case ("wait", cat, items):
                    pools.wait(pools.ids[cat], [item for item in items if item <= pools.added])
                case ("settle", cat):
                    pools.settle(pools.ids[cat])
            pools.check()
        pools.store.close()


def vm_steps(store: Store, work: Callable[[], None]) -> int:
    """SQLite virtual-machine instructions (in thousands) that ``work`` makes the store run: the
    work a query does, whatever the machine's speed."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    def on_connect(connection: sqlite3.Connection, _record: Any) -> None:
        connection.set_progress_handler(count, 1000)

    store.engine.dispose()
    event.listen(store.engine, "connect", on_connect)
    try:
        work()
    finally:
        event.remove(store.engine, "connect", on_connect)
        store.engine.dispose()
    return steps


def test_a_settled_pool_costs_what_is_left_of_it_not_the_items_table(tmp_path: Path) -> None:
    """The same 100 open images in a table of 4,000 and of 40,000: reading the pool (its size, a
    sample's positions, every chunk) takes the same work once settled, about ten times the work before."""
    work: dict[tuple[int, bool], int] = {}
    for items in (4_000, 40_000):
        pools = Pools(tmp_path / str(items))
        pools.ingest(items)
        cat = pools.ids[0]
        pools.label(cat, [item for item in range(1, items + 1) if item % (items // 100)])
        with pools.store.session() as session:
            assert ledger.pool_size(session, cat) == 100

        def read(cat: int = cat, pools: Pools = pools) -> None:
            with pools.store.session() as session:
                assert ledger.pool_size(session, cat) == 100
                assert len(ledger.pool_at(session, cat, np.arange(0, 100, 7, dtype=np.int64))) == 15
                assert sum(len(rows) for rows in ledger.iter_pool(session, cat, size=30)) == 100

        work[(items, False)] = vm_steps(pools.store, read)
        pools.settle(cat)
        work[(items, True)] = vm_steps(pools.store, read)
        pools.store.close()
    assert work[(40_000, False)] > 8 * work[(4_000, False)]  # the unsettled read scans the table
    assert work[(40_000, True)] < 1.2 * work[(4_000, True)] + 5
    assert work[(40_000, True)] * 50 < work[(40_000, False)]


def test_a_version_8_store_upgrades_and_reads_its_pool_from_the_items_until_a_split_settles_it(tmp_path: Path) -> None:
    pools = Pools(tmp_path)
    pools.ingest(30)
    cat = pools.ids[0]
    pools.label(cat, list(range(1, 21)))
    with pools.store.session() as session:  # as version 8 left it: no open pool tables
        session.execute(text("DROP TABLE open_items"))
        session.execute(text("DROP TABLE pool_marks"))
        session.execute(update(Meta).where(Meta.key == "schema_version").values(value="8"))
    pools.store.close()
    pools.store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    with pools.store.session() as session:
        assert session.get_one(Meta, "schema_version").value == str(SCHEMA_VERSION) == "14"
        assert ledger.settled_through(session, cat) == 0
    pools.check()
    pools.settle(cat)
    with pools.store.session() as session:
        assert ledger.settled_through(session, cat) == 30
        assert sorted(session.scalars(select(OpenItem.item_id).where(OpenItem.category_id == cat))) == list(
            range(21, 31)
        )
    pools.check()
    pools.store.close()
