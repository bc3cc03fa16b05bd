"""Opening the project store: SQLite in WAL mode by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine, Table, create_engine, event, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from lsun_crowd.schema import SCHEMA_VERSION, Base, Category, Meta

DATABASE_FILE = "lsun-crowd.db"


def _add_adaptive_redundancy(session: Session) -> None:
    for column in ("follow_up INTEGER NOT NULL DEFAULT 0", "votes_requested INTEGER", "votes_fixed INTEGER"):
        session.execute(text(f"ALTER TABLE rounds ADD COLUMN {column}"))


def _nothing_to_alter(session: Session) -> None:
    """Version 3 only adds tables (round models), which ``create_all`` has made already."""


# Upgrades from version N to N+1, run in order inside the same transaction.
MIGRATIONS: dict[int, Callable[[Session], None]] = {1: _add_adaptive_redundancy, 2: _nothing_to_alter}


class StoreError(RuntimeError):
    pass


def database_url(project_dir: Path, configured: str = "") -> str:
    return configured or f"sqlite:///{(project_dir / DATABASE_FILE).resolve()}"


def _enable_sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Store:
    """The project database. Use :meth:`session` for one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _enable_sqlite_wal)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._create_or_upgrade()

    @classmethod
    def for_project(cls, project_dir: Path, configured_url: str = "") -> Store:
        return cls(database_url(project_dir, configured_url))

    def _create_or_upgrade(self) -> None:
        Base.metadata.create_all(self.engine)
        with self.session() as session:
            row = session.get(Meta, "schema_version")
            if row is None:
                session.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
                return
            version = int(row.value)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.url}: schema version {version} is newer than this lsun-crowd supports "
                    f"({SCHEMA_VERSION}); upgrade lsun-crowd"
                )
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](session)
                version += 1
            row.value = str(version)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()


def insert_ignoring_duplicates(session: Session, model: type[Base], rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert rows, skipping any that a unique constraint says exist already. Returns rows added."""
    if not rows:
        return 0
    table = cast(Table, model.__table__)
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        statement: Any = sqlite.insert(table).on_conflict_do_nothing()
    elif dialect == "postgresql":
        statement = postgresql.insert(table).on_conflict_do_nothing()
    else:
        raise StoreError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")
    result = session.execute(statement, [dict(row) for row in rows])
    return max(int(getattr(result, "rowcount", 0) or 0), 0)


def category_id(session: Session, name: str) -> int:
    """The id of a category, created on first use."""
    found = session.scalar(select(Category.id).where(Category.name == name))
    if found is not None:
        return found
    insert_ignoring_duplicates(session, Category, [{"name": name}])
    created = session.scalar(select(Category.id).where(Category.name == name))
    assert created is not None
    return created
