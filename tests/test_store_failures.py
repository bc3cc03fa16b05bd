"""A store that cannot be written (read-only, full, locked) or reached ends a command with one
line naming the database and the cause, exit status 2 and no traceback; what was committed before
stays, and the next run carries on from it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lsun_crowd import store as store_module
from lsun_crowd.cli import app
from lsun_crowd.demo import write_pool

runner = CliRunner(env={"COLUMNS": "200"})


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output  # stdout and stderr, as a terminal shows them


def set_database_url(project: Path, url: str) -> None:
    config = project / "lsun-crowd.toml"
    lines = [line for line in config.read_text().splitlines() if not line.startswith("database_url")]
    at = lines.index("[project]") + 1
    config.write_text("\n".join([*lines[:at], f"database_url = {url!r}", *lines[at:]]) + "\n")


def items_in(project: Path) -> int:
    with sqlite3.connect(project / "lsun-crowd.db") as db:
        return int(db.execute("SELECT COUNT(*) FROM items").fetchone()[0])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    code, output = invoke("init", str(directory))
    assert code == 0, output
    write_pool(tmp_path / "pool", seed=0, limit=120, digits=range(2))
    code, output = invoke("status", "--project", str(directory))  # creates the store
    assert code == 0, output
    return directory


def one_line_error(output: str) -> str:
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def _with_pragma(pragma: str) -> Callable[[Any, Any], None]:
    original = store_module._enable_sqlite_wal

    def connect(connection: Any, record: Any) -> None:
        original(connection, record)
        connection.execute(pragma)

    return connect


def test_a_read_only_store_is_one_line_naming_the_database(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store opens (reads work), and the first write is refused, as on a read-only mount.
    monkeypatch.setattr(store_module, "_enable_sqlite_wal", _with_pragma("PRAGMA query_only=1"))
    code, output = invoke("ingest", "--project", str(project), str(tmp_path / "pool" / "images"))
    assert code == 2
    line = one_line_error(output)
    assert line.startswith(f"error: database sqlite:///{project / 'lsun-crowd.db'}: ")
    assert line.endswith("attempt to write a readonly database")
    assert items_in(project) == 0


def test_a_full_store_keeps_what_it_committed_and_the_next_run_finishes(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sqlite3.connect(project / "lsun-crowd.db") as db:
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    # The disk fills a few pages into the ingest: as a full disk does, mid-command.
    monkeypatch.setattr(store_module, "_enable_sqlite_wal", _with_pragma(f"PRAGMA max_page_count={pages + 3}"))
    code, output = invoke("ingest", "--project", str(project), str(tmp_path / "pool" / "images"))
    assert code == 2
    line = one_line_error(output)
    assert "lsun-crowd.db" in line and "full" in line
    committed = items_in(project)
    assert committed < 120
    monkeypatch.undo()
    code, output = invoke("ingest", "--project", str(project), str(tmp_path / "pool" / "images"))
    assert code == 0, output
    assert items_in(project) == 120  # nothing lost, nothing twice


def test_a_locked_store_says_so_after_the_busy_timeout(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 200)
    holder = sqlite3.connect(project / "lsun-crowd.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    try:
        code, output = invoke("ingest", "--project", str(project), str(tmp_path / "pool" / "images"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 2
    line = one_line_error(output)
    assert "lsun-crowd.db" in line and "locked" in line
    code, output = invoke("ingest", "--project", str(project), str(tmp_path / "pool" / "images"))
    assert code == 0 and items_in(project) == 120


def test_an_unreachable_postgresql_is_one_line_without_its_password(project: Path) -> None:
    set_database_url(project, "postgresql+psycopg://lsun:hunter2-secret@127.0.0.1:1/crowd")
    code, output = invoke("status", "--project", str(project))
    assert code == 2
    line = one_line_error(output)
    assert "127.0.0.1" in line and "refused" in line.lower()
    assert "hunter2-secret" not in output and "lsun:***@" in line
