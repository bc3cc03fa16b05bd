from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from lsun_crowd.schema import SCHEMA_VERSION, AssignmentRow, Category, Hit, Item, Meta, Round, Vote, Worker
from lsun_crowd.store import Store, StoreError, category_id, insert_ignoring_duplicates


def seeded(tmp_path: Path) -> tuple[Store, dict[str, int]]:
    store = Store.for_project(tmp_path)
    with store.session() as session:
        item = Item(sha256="a" * 64, uri="/x.png", width=1, height=1)
        session.add(item)
        cat = category_id(session, "cat")
        round_ = Round(category_id=cat, number=1, state="published")
        session.add(round_)
        session.flush()
        hit = Hit(round_id=round_.id, batch_id="b", hit_key="h0", assignments_requested=3)
        worker = Worker(platform_worker_id="W1")
        session.add_all([hit, worker])
        session.flush()
        assignment = AssignmentRow(
            platform_assignment_id="A1",
            hit_id=hit.id,
            worker_id=worker.id,
            status="submitted",
            accepted_at=0,
            submitted_at=1,
        )
        session.add(assignment)
        session.flush()
        ids = {"item": item.id, "cat": cat, "assignment": assignment.id, "worker": worker.id, "hit": hit.id}
    return store, ids


def test_sqlite_file_in_wal_mode(tmp_path: Path) -> None:
    store = Store.for_project(tmp_path)
    assert (tmp_path / "lsun-crowd.db").is_file()
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_an_assignment_delivered_twice_never_duplicates_votes(tmp_path: Path) -> None:
    store, ids = seeded(tmp_path)
    vote = {
        "assignment_id": ids["assignment"],
        "item_id": ids["item"],
        "category_id": ids["cat"],
        "worker_id": ids["worker"],
        "answer": 1,
        "is_gold": False,
    }
    for _ in range(3):
        with store.session() as session:
            insert_ignoring_duplicates(session, Vote, [vote, vote])
    with store.session() as session:
        assert session.scalar(select(func.count(Vote.id))) == 1
    with pytest.raises(IntegrityError), store.session() as session:
        session.add(Vote(**vote))
    with store.session() as session:
        insert_ignoring_duplicates(
            session,
            AssignmentRow,
            [
                {
                    "platform_assignment_id": "A1",
                    "hit_id": ids["hit"],
                    "worker_id": ids["worker"],
                    "status": "submitted",
                    "accepted_at": 0,
                    "submitted_at": 1,
                }
            ],
        )
        assert session.scalar(select(func.count(AssignmentRow.id))) == 1


def test_a_failed_transaction_loses_nothing_already_stored(tmp_path: Path) -> None:
    store, _ = seeded(tmp_path)
    with pytest.raises(RuntimeError), store.session() as session:
        session.add(Item(sha256="b" * 64, uri="/y.png", width=1, height=1))
        session.flush()
        raise RuntimeError("crash mid-transaction")
    with store.session() as session:
        assert list(session.scalars(select(Item.uri))) == ["/x.png"]


def test_category_id_is_stable(tmp_path: Path) -> None:
    store = Store.for_project(tmp_path)
    with store.session() as session:
        first = category_id(session, "kitchen")
    with store.session() as session:
        assert category_id(session, "kitchen") == first
        assert session.scalar(select(func.count(Category.id))) == 1


def test_schema_is_versioned_and_a_newer_store_is_refused(tmp_path: Path) -> None:
    store = Store.for_project(tmp_path)
    with store.session() as session:
        assert session.get(Meta, "schema_version").value == str(SCHEMA_VERSION)  # type: ignore[union-attr]
        session.get(Meta, "schema_version").value = str(SCHEMA_VERSION + 1)  # type: ignore[union-attr]
    store.close()
    with pytest.raises(StoreError, match="newer than this lsun-crowd supports"):
        Store.for_project(tmp_path)


def test_reopening_keeps_data(tmp_path: Path) -> None:
    store, _ = seeded(tmp_path)
    store.close()
    with Store.for_project(tmp_path).session() as session:
        assert session.scalar(select(func.count(Item.id))) == 1


def test_a_version_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    """A store written before adaptive redundancy gains the round columns and the round models
    table (version 3), and keeps its rows."""
    store, _ = seeded(tmp_path)
    with store.session() as session:
        session.execute(text("DROP TABLE round_models"))
        for column in ("follow_up", "votes_requested", "votes_fixed"):
            session.execute(text(f"ALTER TABLE rounds DROP COLUMN {column}"))
        session.get(Meta, "schema_version").value = "1"  # type: ignore[union-attr]
    store.close()
    upgraded = Store.for_project(tmp_path)
    with upgraded.session() as session:
        assert session.get(Meta, "schema_version").value == str(SCHEMA_VERSION)  # type: ignore[union-attr]
        round_ = session.scalars(select(Round)).one()
        assert (round_.number, round_.state, round_.follow_up, round_.votes_requested) == (1, "published", 0, None)
        assert session.scalar(select(func.count(AssignmentRow.id))) == 1
    assert inspect(upgraded.engine).has_table("round_models")


def test_every_project_gets_an_identity_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = Store.for_project(tmp_path / "a"), Store.for_project(tmp_path / "b")
    keys = {first.project_key("same-name"), second.project_key("same-name")}
    assert len(keys) == 2 and all(re.fullmatch(r"same-name#[0-9a-f]{8}", key) for key in keys)
    assert first.project_key("same-name") == first.project_key("same-name")  # kept in the store
    reopened = Store.for_project(tmp_path / "a")
    assert reopened.project_key("same-name") == first.project_key("same-name")
