"""A throwaway PostgreSQL server for the tests: initdb in a temporary folder, a Unix socket only.

It uses the server binaries Debian's `postgresql` package installs (`.ci/run` installs it). Where
they are missing the tests that need it skip, unless LSUN_CROWD_REQUIRE_POSTGRES is set (as CI
sets it), in which case they fail: CI must never pass by skipping them.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _unavailable(reason: str) -> None:
    if os.environ.get("LSUN_CROWD_REQUIRE_POSTGRES"):
        pytest.fail(f"PostgreSQL is required here but {reason}")
    pytest.skip(f"no PostgreSQL server to test against: {reason}")


@contextmanager
def postgres_server(settings: Mapping[str, str] | None = None) -> Iterator[str]:
    """Start a server in a fresh temporary folder; yield its SQLAlchemy URL; stop it and clean up.
    ``settings`` are server parameters to start it with (``{"shared_buffers": "1GB"}``).

    The folder is made with ``tempfile`` rather than pytest's ``tmp_path``, whose parents are
    private to root and so unreachable for the ``postgres`` user."""
    binaries = _binaries()
    if binaries is None:
        _unavailable("initdb was not found (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the psycopg driver is not installed (pip install 'lsun-crowd[postgres]')")
    assert binaries is not None
    directory = Path(tempfile.mkdtemp(prefix="lsun-crowd-postgres-"))
    data, socket = directory / "data", directory / "socket"
    socket.mkdir()
    # PostgreSQL refuses to run as root: run it as the `postgres` system user where we are root.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(directory, "postgres")
        shutil.chown(socket, "postgres")
    subprocess.run(
        [*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "lsun", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    options = f"-k {socket} -c listen_addresses='' -c fsync=off"
    options += "".join(f" -c {name}={value}" for name, value in (settings or {}).items())
    subprocess.run(
        [
            *as_user,
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "start",
            "-l",
            str(directory / "server.log"),
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://lsun@/postgres?host={socket}"
    finally:
        subprocess.run(
            [*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(directory, ignore_errors=True)


def fresh_database(server_url: str, name: str) -> str:
    """An empty database ``name`` on the server (dropped first if a run left one); its URL."""
    from sqlalchemy import create_engine, text

    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_url.replace("/postgres?", f"/{name}?")
