"""The label counts ``status`` reads stay equal to the labels themselves through every kind of
write (new labels, replayed writes, revisions), on a store upgraded from version 6 too."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event, func, select, text

from lsun_crowd import ledger
from lsun_crowd.schema import Item, Label, LabelCount, Meta
from lsun_crowd.status import category_status
from lsun_crowd.store import Store, category_id, insert_ignoring_duplicates


def counted(store: Store) -> dict[tuple[int, int, str], int]:
    with store.session() as session:
        rows = session.execute(select(LabelCount.category_id, LabelCount.label, LabelCount.source, LabelCount.count))
        return {(c, label, source): n for c, label, source, n in rows if n}


def grouped(store: Store) -> dict[tuple[int, int, str], int]:
    with store.session() as session:
        rows = session.execute(
            select(Label.category_id, Label.label, Label.source, func.count()).group_by(
                Label.category_id, Label.label, Label.source
            )
        )
        return {(c, label, source): n for c, label, source, n in rows}


def a_store(directory: Path, items: int) -> tuple[Store, int, int]:
    store = Store(f"sqlite:///{directory / 'store.db'}")
    with store.session() as session:
        insert_ignoring_duplicates(
            session,
            Item,
            [{"sha256": f"{n:064x}", "uri": f"/images/{n}.png", "width": 8, "height": 8} for n in range(items)],
        )
        first, second = category_id(session, "cat"), category_id(session, "dog")
    return store, first, second


def test_counts_follow_every_write(tmp_path: Path) -> None:
    store, cat, dog = a_store(tmp_path, 100)
    with store.session() as session:
        labels = [ledger.NewLabel(item, item % 3 == 0, 0.9) for item in range(1, 61)]
        assert ledger.record_labels(session, cat, labels, source="human", origin="round:1:human") == 60
        # The same step replayed, and a model label for images people labeled already: nothing added.
        assert ledger.record_labels(session, cat, labels, source="human", origin="round:1:human") == 0
        assert ledger.record_labels(session, cat, labels[:10], source="model", origin="round:1:model") == 0
        ledger.record_labels(
            session, cat, [ledger.NewLabel(item, 0, 0.99) for item in range(61, 101)], source="model", origin="m"
        )
        ledger.record_labels(
            session, dog, [ledger.NewLabel(item, 1, 0.8) for item in range(1, 6)], source="human", origin="h"
        )
        # A repair turns five human negatives positive, and a conflict settles two model labels.
        ledger.revise_labels(
            session, cat, [ledger.NewLabel(item, 1, 0.95) for item in (2, 4, 5, 7, 8)], source="human", origin="repair"
        )
        ledger.revise_labels(
            session, cat, [ledger.NewLabel(item, 1, 0.9) for item in (61, 62)], source="human", origin="conflict"
        )
    assert counted(store) == grouped(store)
    assert counted(store)[(cat, 1, "human")] == 20 + 5 + 2  # 20 multiples of 3, five repaired, two settled
    assert counted(store)[(cat, 0, "model")] == 38
    by_name = {row.category: row for row in category_status(store, ["cat", "dog"])}
    assert (by_name["cat"].positive, by_name["cat"].negative, by_name["cat"].unlabeled) == (27, 73, 0)
    assert (by_name["dog"].positive, by_name["dog"].human_labeled, by_name["dog"].unlabeled) == (5, 5, 95)
    store.close()


def test_a_version_6_store_gets_its_counts(tmp_path: Path) -> None:
    store, cat, _ = a_store(tmp_path, 30)
    with store.session() as session:
        ledger.record_labels(
            session, cat, [ledger.NewLabel(i, i % 2, 0.9) for i in range(1, 21)], source="human", origin="h"
        )
        # What a version 6 store looks like: no counts.
        session.execute(text("DELETE FROM label_counts"))
        session.get(Meta, "schema_version").value = "6"  # type: ignore[union-attr]
    store.close()
    upgraded = Store(f"sqlite:///{tmp_path / 'store.db'}")
    assert counted(upgraded) == grouped(upgraded) == {(cat, 1, "human"): 10, (cat, 0, "human"): 10}
    upgraded.close()


def test_a_chunk_of_labels_is_a_few_statements_not_one_per_label(tmp_path: Path) -> None:
    """A split writes a million model labels: each chunk goes to the database as multi-row
    statements, and the counts still come out right when part of the chunk was labeled before."""
    store, cat, _ = a_store(tmp_path, 6000)
    with store.session() as session:
        ledger.record_labels(
            session, cat, [ledger.NewLabel(item, 1, 0.9) for item in range(1, 1001)], source="human", origin="h"
        )
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with store.session() as session:
        added = ledger.record_labels(
            session,
            cat,
            [ledger.NewLabel(item, int(item % 4 == 0), 0.9) for item in range(1, 6001)],
            source="model",
            origin="round:1:model",
        )
    assert added == 5000
    writes = [statement for statement in statements if statement.lstrip().upper().startswith("INSERT")]
    assert len(writes) <= 20, f"{len(writes)} INSERT statements for 6,000 labels"
    assert counted(store) == grouped(store)
    assert counted(store)[(cat, 1, "model")] == 1250  # 1,001 … 6,000 holds 1,250 multiples of 4
