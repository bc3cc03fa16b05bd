"""One ``run`` per project: a second one exits at once naming the holder, on SQLite and PostgreSQL;
a holder killed with SIGKILL frees the project by itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lsun_crowd.lock import LockHeld, RunLockGuard, current_holder
from lsun_crowd.schema import RunLock
from lsun_crowd.store import Store
from lsun_crowd.testing import write_project

from .postgres import fresh_database, postgres_server

HOLD = """
import sys, time
from lsun_crowd.lock import RunLockGuard
from lsun_crowd.store import Store
guard = RunLockGuard(Store(sys.argv[1]))
guard.acquire()
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="module")
def postgres_server_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lsun-crowd.db'}"
    server: str = request.getfixturevalue("postgres_server_url")
    return fresh_database(server, "lock_" + request.node.name.lower().replace("[", "_").replace("]", "")[:40])


def project_on(directory: Path, url: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "truth.csv").write_text("uri,category,label\n")
    database = "" if url.startswith("sqlite") else url
    write_project(
        directory,
        {
            "project": {"name": "locked", "categories": ["cat"], "database_url": database},
            "crowd": {"adapter": "mock", "settings": {"truth_file": "truth.csv"}},
        },
    )
    return directory


def hold_in_another_process(url: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_exits_at_once_naming_the_holder(store_url: str, tmp_path: Path) -> None:
    directory = project_on(tmp_path / "project", store_url)
    url = store_url if not store_url.startswith("sqlite") else f"sqlite:///{directory / 'lsun-crowd.db'}"
    holder = hold_in_another_process(url)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "lsun_crowd.cli", "run", "--project", str(directory)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        status = subprocess.run(
            [sys.executable, "-m", "lsun_crowd.cli", "status", "--project", str(directory)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.kill()
        holder.wait()
    assert status.returncode == 0, status.stderr
    assert f"a run is working on this project: process {holder.pid} on" in " ".join(status.stdout.split())
    assert second.returncode == 2, second.stderr
    message = " ".join(second.stderr.split())
    assert "another `lsun-crowd run` is working on this project" in message
    assert f"process {holder.pid} on {socket.gethostname()}" in message
    assert "Traceback" not in second.stderr


def test_a_killed_holder_frees_the_project(store_url: str) -> None:
    store = Store(store_url)
    holder = hold_in_another_process(store_url)
    with pytest.raises(LockHeld, match=f"process {holder.pid} "):
        RunLockGuard(store).acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    guard = RunLockGuard(store)
    guard.acquire()  # the row is still there, but its process is gone
    found = current_holder(store)
    assert found is not None and found.pid == os.getpid()
    with pytest.raises(LockHeld):
        RunLockGuard(store).acquire()  # a live holder (this process) keeps it
    guard.release()
    assert current_holder(store) is None
    store.close()


def test_a_holder_on_another_machine_counts_until_its_heartbeat_is_stale(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    now = [1_000_000.0]
    with store.session() as session:
        session.add(RunLock(name="run", token="x", host="elsewhere", pid=4242, started_at=0.0, heartbeat_at=now[0]))
    guard = RunLockGuard(store, stale_seconds=120, clock=lambda: now[0])
    now[0] += 60
    with pytest.raises(LockHeld, match="process 4242 on elsewhere"):
        guard.acquire()
    now[0] += 61  # 121 s without a heartbeat: that run is gone
    guard.acquire()
    found = current_holder(store)
    assert found is not None and (found.host, found.pid) == (socket.gethostname(), os.getpid())
    guard.heartbeat()
    guard.release()
    store.close()
