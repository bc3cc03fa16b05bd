"""Opening the project store: SQLite in WAL mode by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, create_engine, event, func, inspect, literal, make_url, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.schema import CreateTable

from lsun_crowd.schema import SCHEMA_VERSION, Base, Category, Hit, Meta

DATABASE_FILE = "lsun-crowd.db"


def _add_adaptive_redundancy(session: Session) -> None:
    for column in ("follow_up INTEGER NOT NULL DEFAULT 0", "votes_requested INTEGER", "votes_fixed INTEGER"):
        session.execute(text(f"ALTER TABLE rounds ADD COLUMN {column}"))


def _add_round_kind(session: Session) -> None:
    """Version 10: a round is a split or a certification, and a round's model records how often
    people contradicted it where it was sure (the certification table is created with every new
    table)."""
    if "kind" not in {column["name"] for column in inspect(session.connection()).get_columns("rounds")}:
        session.execute(text("ALTER TABLE rounds ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'split'"))
    present = {column["name"] for column in inspect(session.connection()).get_columns("round_models")}
    for column in ("disagreement", "disagreement_positive"):
        if column not in present:
            session.execute(text(f"ALTER TABLE round_models ADD COLUMN {column} FLOAT"))


def _add_model_share(session: Session) -> None:
    """Version 11: a label records the model's part in it (0 for every label made before)."""
    for table in ("labels", "label_events"):
        if "model_share" not in {column["name"] for column in inspect(session.connection()).get_columns(table)}:
            session.execute(text(f"ALTER TABLE {table} ADD COLUMN model_share FLOAT NOT NULL DEFAULT 0"))


def _add_certification_look(session: Session) -> None:
    """Version 12: a certification's sample may come in two looks (every earlier one had one)."""
    columns = {column["name"] for column in inspect(session.connection()).get_columns("certification_items")}
    if "look" not in columns:
        session.execute(text("ALTER TABLE certification_items ADD COLUMN look INTEGER NOT NULL DEFAULT 1"))


def _add_round_pool_size(session: Session) -> None:
    """Version 14: a round keeps the size of the pool it was drawn from (unknown before)."""
    if "pool_size" not in {column["name"] for column in inspect(session.connection()).get_columns("rounds")}:
        session.execute(text("ALTER TABLE rounds ADD COLUMN pool_size INTEGER"))


def _add_item_file_status(session: Session) -> None:
    """Version 6: items keep the size and mtime their file had when ingest hashed it."""
    columns = {column["name"] for column in inspect(session.connection()).get_columns("items")}
    for column in ("file_size", "file_mtime_ns"):
        if column not in columns:
            session.execute(text(f"ALTER TABLE items ADD COLUMN {column} BIGINT"))


def _nothing_to_alter(session: Session) -> None:
    """Versions 3, 5, 9 and 13 only add tables (round models; guarantees, audits, repairs; each
    category's open pool; audits' follow-up jobs), which ``create_all`` has made already. A store upgraded to 9 has no
    pool marks, so its pools are read from the items table until their next split settles them."""


def _add_jobs_and_label_events(session: Session) -> None:
    """Version 4: crowd work becomes jobs, labels get their append-only history.

    Every batch of HITs already stored becomes a job of its round: the round's current batch in
    the round's own state, earlier ones reviewed. The current labels become the first events.
    ``hits.round_id`` may be empty from now on (a job outside any round).
    """
    for table in ("hits", "spend"):
        columns = {column["name"] for column in inspect(session.connection()).get_columns(table)}
        if "job_id" not in columns:  # a store made by an older version; a newer one has it already
            session.execute(text(f"ALTER TABLE {table} ADD COLUMN job_id INTEGER REFERENCES jobs(id)"))
    batches = session.execute(
        text(
            "SELECT h.round_id, h.batch_id, MIN(h.assignments_requested), r.category_id, r.follow_up, r.state "
            "FROM hits h JOIN rounds r ON r.id = h.round_id GROUP BY h.round_id, h.batch_id, r.category_id, "
            "r.follow_up, r.state ORDER BY h.round_id, h.batch_id"
        )
    ).all()
    crowd_states = {"sampled": "pending", "stopped": "stopped", "publishing": "publishing"}
    crowd_states |= {state: state for state in ("published", "collected", "reviewed")}
    for round_id, batch, assignments, category, follow_up, round_state in batches:
        last = batch.rsplit(":", 1)[-1]  # r{round}, or f{k} for a follow-up batch
        sequence = int(last[1:]) if last.startswith("f") and last[1:].isdigit() else 0
        current = sequence == follow_up and round_state in crowd_states
        session.execute(
            text(
                "INSERT INTO jobs (category_id, round_id, kind, sequence, batch_id, state, assignments_per_hit, "
                "notes, created_at) VALUES (:category, :round, :kind, :sequence, :batch, :state, :assignments, '', "
                "CURRENT_TIMESTAMP)"
            ),
            {
                "category": category,
                "round": round_id,
                "kind": "follow_up" if sequence else "round",
                "sequence": sequence,
                "batch": batch,
                "state": crowd_states[round_state] if current else "reviewed",
                "assignments": assignments,
            },
        )
    session.execute(text("UPDATE hits SET job_id = (SELECT jobs.id FROM jobs WHERE jobs.batch_id = hits.batch_id)"))
    session.execute(text("UPDATE spend SET job_id = (SELECT jobs.id FROM jobs WHERE jobs.batch_id = spend.reference)"))
    _lift_not_null_on_hit_rounds(session)
    session.execute(
        text(
            "INSERT INTO label_events (item_id, category_id, label, source, origin, round_id, confidence, votes, "
            "reason, created_at) SELECT item_id, category_id, label, source, 'v3', round_id, confidence, votes, "
            "'carried over from schema version 3', CURRENT_TIMESTAMP FROM labels"
        )
    )


HIT_COLUMNS = "id, round_id, job_id, batch_id, hit_key, platform_hit_id, state, assignments_requested, created_at"


def _lift_not_null_on_hit_rounds(session: Session) -> None:
    """PostgreSQL drops the constraint. SQLite cannot, so the table is rebuilt inside the
    migration's transaction: its rows are copied aside, the table is dropped and made anew, and
    the rows go back with their ids. With ``defer_foreign_keys`` the other tables' references to
    ``hits`` are checked at commit, when every one finds its row again. Its indexes are made after
    the migration, with every table's."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ALTER TABLE hits ALTER COLUMN round_id DROP NOT NULL"))
        return
    table = cast(Table, Hit.__table__)
    session.execute(text("PRAGMA defer_foreign_keys = ON"))
    for index in table.indexes:
        session.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
    session.execute(text(f"CREATE TEMPORARY TABLE hits_v3 AS SELECT {HIT_COLUMNS} FROM hits"))
    session.execute(text("DROP TABLE hits"))
    session.execute(CreateTable(table))
    session.execute(text(f"INSERT INTO hits ({HIT_COLUMNS}) SELECT {HIT_COLUMNS} FROM hits_v3 ORDER BY id"))
    session.execute(text("DROP TABLE hits_v3"))
    broken = session.execute(text("PRAGMA foreign_key_check")).all()
    if broken:
        raise StoreError(f"rebuilding the hits table broke {len(broken)} reference(s), e.g. {tuple(broken[0])}")


def recount_labels(session: Session) -> None:
    """The label counts ``status`` reads, recomputed from the labels stored (version 7's
    migration; and for stores filled outside :mod:`lsun_crowd.ledger`, as the benchmarks do)."""
    session.execute(text("DELETE FROM label_counts"))
    session.execute(
        text(
            "INSERT INTO label_counts (category_id, label, source, count) "
            "SELECT category_id, label, source, COUNT(*) FROM labels GROUP BY category_id, label, source"
        )
    )


PROJECT_ID = "project_id"  # the meta key of the project's identity


def _new_project_id() -> str:
    return secrets.token_hex(4)


def _give_project_identity(session: Session) -> None:
    """Version 8: a project gets a random id of its own. Jobs already created keep their batch ids
    (their HITs are found by them); batches created from now on carry the id."""
    if session.get(Meta, PROJECT_ID) is None:
        session.add(Meta(key=PROJECT_ID, value=_new_project_id()))


# Upgrades from version N to N+1, run in order inside the same transaction.
MIGRATIONS: dict[int, Callable[[Session], None]] = {
    1: _add_adaptive_redundancy,
    2: _nothing_to_alter,
    3: _add_jobs_and_label_events,
    4: _nothing_to_alter,
    5: _add_item_file_status,
    6: recount_labels,
    7: _give_project_identity,
    8: _nothing_to_alter,
    9: _add_round_kind,
    10: _add_model_share,
    11: _add_certification_look,
    12: _nothing_to_alter,
    13: _add_round_pool_size,
}


class StoreError(RuntimeError):
    """The project database cannot be opened or written; the message names it (without its
    password) and gives the database's own reason on one line."""


BUSY_TIMEOUT_MS = 30_000  # how long a write waits for another process's lock before it fails


def safe_url(url: str) -> str:
    """``url`` as it may be printed: any password replaced by ``***``."""
    try:
        parsed = make_url(url)
        return url if parsed.password is None else parsed.render_as_string(hide_password=True)
    except ArgumentError:
        return "(a database_url that is not a URL)"


def _reason(error: DBAPIError) -> str:
    """The database's own words, on one line (psycopg's span several)."""
    return " ".join(str(error.orig if error.orig is not None else error).split())


def store_failure(url: str, error: DBAPIError) -> StoreError:
    """What a failed database operation is reported as: the database, and why."""
    return StoreError(f"database {safe_url(url)}: {_reason(error)}")


def database_url(project_dir: Path, configured: str = "") -> str:
    return configured or f"sqlite:///{(project_dir / DATABASE_FILE).resolve()}"


def _enable_sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_MS)}")
    cursor.close()


def _without_jit(dbapi_connection: Any, _record: Any) -> None:
    """No JIT compilation on the store's PostgreSQL connections. Its queries are index probes and
    key-range windows of at most :data:`lsun_crowd.ledger.CHUNK` rows, and PostgreSQL decides to
    compile (and to inline and optimise, above 500,000 cost units) from cost estimates that grow
    with the tables: at a million images it chose inlining and optimisation for pages of the pool
    (seen with ``auto_explain``)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("SET jit = off")
    cursor.close()
    dbapi_connection.commit()


class Store:
    """The project database. Use :meth:`session` for one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine: Engine = create_engine(url)
        except (ArgumentError, NoSuchModuleError, ImportError) as error:
            raise StoreError(f"database_url {safe_url(url)!r}: {error}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _enable_sqlite_wal)
        elif self.engine.dialect.name == "postgresql":
            event.listen(self.engine, "connect", _without_jit)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._create_or_upgrade()

    @classmethod
    def for_project(cls, project_dir: Path, configured_url: str = "") -> Store:
        return cls(database_url(project_dir, configured_url))

    def _create_or_upgrade(self) -> None:
        try:
            Base.metadata.create_all(self.engine)
        except DBAPIError as error:
            raise store_failure(self.url, error) from None
        with self.session() as session:
            row = session.get(Meta, "schema_version")
            if row is None:
                session.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
                _give_project_identity(session)
                return
            version = int(row.value)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database {safe_url(self.url)}: schema version {version} is newer than this lsun-crowd supports "
                    f"({SCHEMA_VERSION}); upgrade lsun-crowd"
                )
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](session)
                version += 1
            row.value = str(version)
        # Tables that existed before a version added an index get it now; a no-op once present.
        with self.connection() as connection:
            for table in Base.metadata.sorted_tables:
                for index in table.indexes:
                    index.create(connection, checkfirst=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error. A failure of the
        database itself (full, read-only, locked, gone) is a :class:`StoreError` naming it; what
        earlier transactions committed stays."""
        try:
            with self._sessions.begin() as session:
                yield session
        except (OperationalError, InterfaceError) as error:
            raise store_failure(self.url, error) from None

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """One transaction on a bare connection (for streaming reads and bulk DDL), with the same
        reporting of database failures as :meth:`session`."""
        try:
            with self.engine.begin() as connection:
                yield connection
        except (OperationalError, InterfaceError) as error:
            raise store_failure(self.url, error) from None

    def project_key(self, name: str) -> str:
        """``name#id``: what the project's batch ids, qualification tests and platform annotations
        start with, so that two projects never share a HIT or a test, whatever their names."""
        with self.session() as session:
            _give_project_identity(session)  # a store written by hand gets its identity now
            return f"{name}#{session.get_one(Meta, PROJECT_ID).value}"

    def close(self) -> None:
        self.engine.dispose()


def _dialect_insert(session: Session, model: type[Base]) -> Any:
    """``INSERT`` for ``model``'s table in the session's dialect (SQLite or PostgreSQL), which
    both offer ``ON CONFLICT``."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return sqlite.insert(cast(Table, model.__table__))
    if dialect == "postgresql":
        return postgresql.insert(cast(Table, model.__table__))
    raise StoreError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")


def _unnest_insert(model: type[Base], rows: Sequence[Mapping[str, Any]]) -> Any:
    """PostgreSQL: the rows as one ``INSERT ... SELECT`` from ``unnest`` of one array a column,
    whatever their number. Rows sent as an ``executemany`` or as multi-row ``VALUES`` of a
    thousand rows (SQLAlchemy's ways) cost the server a parse of thousands of parameters per
    statement: the ledger's label writes took 1.9 times as long (``benchmarks/label_writes.py``).
    The rows must all name the same columns (as an ``executemany``'s must); those they leave out
    take their defaults, a callable's once for the statement."""
    names = list(rows[0])
    if any(len(row) != len(names) or any(name not in row for name in names) for row in rows):
        raise ValueError(f"rows inserted into {model.__tablename__} together must all name the same columns")
    table = cast(Table, model.__table__)
    arrays = [literal([row[name] for row in rows], postgresql.ARRAY(table.c[name].type)) for name in names]
    source = func.unnest(*arrays).table_valued(*names).render_derived(name="new_rows")
    return postgresql.insert(table).from_select(names, select(*source.c))


def _insert(session: Session, model: type[Base], rows: Sequence[Mapping[str, Any]]) -> tuple[Any, Any]:
    """The statement that inserts ``rows``, skipping any that a unique constraint says exist
    already, and the parameters to execute it with."""
    if session.get_bind().dialect.name == "postgresql":
        return _unnest_insert(model, rows).on_conflict_do_nothing(), None
    return _dialect_insert(session, model).on_conflict_do_nothing(), [dict(row) for row in rows]


def insert_ignoring_duplicates(session: Session, model: type[Base], rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert rows, skipping any that a unique constraint says exist already. Returns rows added."""
    if not rows:
        return 0
    statement, parameters = _insert(session, model, rows)
    result = session.execute(statement.execution_options(preserve_rowcount=True), parameters)
    return max(int(getattr(result, "rowcount", 0) or 0), 0)


def insert_returning(session: Session, model: type[Base], rows: Sequence[Mapping[str, Any]], column: Any) -> list[Any]:
    """Insert rows, skipping any that a unique constraint says exist already; ``column`` of each
    row actually added (what a row count cannot tell reliably on every driver), in no particular
    order: asking for the rows' order would make SQLAlchemy send one ``INSERT`` per row."""
    if not rows:
        return []
    statement, parameters = _insert(session, model, rows)
    return list(session.scalars(statement.returning(column), parameters))


def add_to_counts(
    session: Session, model: type[Base], keys: Sequence[str], deltas: Mapping[tuple[Any, ...], int]
) -> None:
    """Add ``deltas`` (key values → change) to ``model``'s ``count`` column, creating rows as
    needed: one upsert per key."""
    count = cast(Table, model.__table__).c.count
    for values, delta in deltas.items():
        if delta == 0:
            continue
        row = dict(zip(keys, values, strict=True)) | {"count": delta}
        insert = _dialect_insert(session, model).values(**row)
        session.execute(insert.on_conflict_do_update(index_elements=list(keys), set_={"count": count + delta}))


def category_id(session: Session, name: str) -> int:
    """The id of a category, created on first use."""
    found = session.scalar(select(Category.id).where(Category.name == name))
    if found is not None:
        return found
    insert_ignoring_duplicates(session, Category, [{"name": name}])
    created = session.scalar(select(Category.id).where(Category.name == name))
    assert created is not None
    return created
