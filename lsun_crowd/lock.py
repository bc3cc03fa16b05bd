"""One ``run`` per project at a time, through a lock kept in the store itself.

The lock is a row of ``run_lock`` naming its holder (host, pid, the process's start time, a
heartbeat). Taking it is a compare-and-set on that row, so it works the same on SQLite and
PostgreSQL and across machines that share a PostgreSQL store. A holder that died (a SIGKILL
included) leaves its row behind: on the same host it is recognised at once (no such process, or a
process with that pid that started at another time), elsewhere once its heartbeat is older than
``stale_seconds``.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select, update

from lsun_crowd.schema import RunLock
from lsun_crowd.store import Store, insert_ignoring_duplicates

LOCK_NAME = "run"
STALE_SECONDS = 120.0


class LockHeld(RuntimeError):
    """Another ``run`` holds the project."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started_at: float
    heartbeat_at: float

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at))
        return f"process {self.pid} on {self.host} (running since {since})"


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch; ``None`` if there is none."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0.0  # alive, start time unknown
    return 0.0


def _alive_here(holder: Holder) -> bool:
    started = process_start_time(holder.pid)
    if started is None:
        return False
    # A pid the system gave to a newer process after the holder died is not the holder.
    return started == 0.0 or abs(started - holder.started_at) < 2.0


class RunLockGuard:
    """Take with :meth:`acquire`; refresh with :meth:`heartbeat`; give back with :meth:`release`."""

    def __init__(
        self, store: Store, stale_seconds: float = STALE_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.stale_seconds = stale_seconds
        self.clock = clock
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = process_start_time(self.pid) or clock()

    def acquire(self) -> None:
        now = self.clock()
        mine = {
            "name": LOCK_NAME,
            "token": self.token,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at,
            "heartbeat_at": now,
        }
        with self.store.session() as session:
            if insert_ignoring_duplicates(session, RunLock, [mine]):
                return
            row = session.get(RunLock, LOCK_NAME)
            assert row is not None
            holder = Holder(row.host, row.pid, row.started_at, row.heartbeat_at)
            previous = row.token
            if previous == self.token:
                return
            if self._holder_is_alive(holder, now):
                raise LockHeld(
                    f"{self.store.url}: another `lsun-crowd run` is working on this project: {holder.describe()}, "
                    f"last seen {max(now - holder.heartbeat_at, 0):.0f} s ago. Wait for it to finish or stop it; "
                    "a run that was killed frees the project by itself."
                )
            taken = session.execute(
                update(RunLock).where(RunLock.name == LOCK_NAME, RunLock.token == previous).values(**mine)
            )
            if not getattr(taken, "rowcount", 0):
                raise LockHeld(f"{self.store.url}: another `lsun-crowd run` took the project just now")

    def _holder_is_alive(self, holder: Holder, now: float) -> bool:
        if holder.host == self.host:
            return _alive_here(holder)
        return now - holder.heartbeat_at < self.stale_seconds

    def heartbeat(self) -> None:
        with self.store.session() as session:
            session.execute(
                update(RunLock)
                .where(RunLock.name == LOCK_NAME, RunLock.token == self.token)
                .values(heartbeat_at=self.clock())
            )

    def release(self) -> None:
        with self.store.session() as session:
            session.execute(delete(RunLock).where(RunLock.name == LOCK_NAME, RunLock.token == self.token))

    def __enter__(self) -> RunLockGuard:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def current_holder(store: Store) -> Holder | None:
    with store.session() as session:
        row = session.scalars(select(RunLock).where(RunLock.name == LOCK_NAME)).first()
        return Holder(row.host, row.pid, row.started_at, row.heartbeat_at) if row else None
