"""The same store and cascade on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from lsun_crowd.project import Project
from lsun_crowd.schema import SCHEMA_VERSION, Item, Meta, Vote
from lsun_crowd.store import Store, category_id, insert_ignoring_duplicates
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
