"""Named points where the crash harness kills a run for real, to prove that it resumes.

``LSUN_CROWD_CRASH_AT=publish:3`` makes the process send itself ``SIGKILL`` the third time it
reaches the point named ``publish`` (no cleanup, no flush, no ``finally``: what a power cut or the
OOM killer does). Unset, :func:`reached` is one comparison, so the points stay in production code.
``benchmarks/crash.py`` and ``tests/test_crash_points.py`` drive it; ``docs/reliability.md`` lists
the points and what each proves.

The points sit at the worst moments of every stage:

- ``ingest``: images of a manifest or folder checked, before their rows are written;
- ``embed``: a batch of images embedded, before the cache holds it durably;
- ``sample``, ``aggregate``, ``train``, ``score``, ``split``, ``store writes``, ``publish``,
  ``review`` and ``collect``: where each stage begins (:meth:`lsun_crowd.stages.Stages.timed`);
  ``score`` and ``store writes`` come once per chunk of the pool, inside the transaction that
  writes the round's labels;
- ``created:<job kind>``: the platform created a job's HITs (a round batch, a follow-up, an audit,
  a repair), and the store does not know their ids yet;
- ``listed``: a HIT's assignments read from the platform, not yet stored;
- ``polled``: a poll's assignments stored and its HITs closed, the poll not yet counted;
- ``approving``: some of a job's assignments approved or rejected on the platform, not all.
"""

from __future__ import annotations

import atexit
import os
import signal
from collections import Counter
from pathlib import Path

ENVIRONMENT = "LSUN_CROWD_CRASH_AT"
COUNTS = "LSUN_CROWD_CRASH_COUNTS"  # a file to write the passes through every point to, at exit


def _target(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, count = value.rpartition(":")
    if not name or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{ENVIRONMENT}={value!r}: expected POINT:N, e.g. publish:3")
    return name, int(count)


_TARGET = _target(os.environ.get(ENVIRONMENT))
_RECORD = os.environ.get(COUNTS)
_passes: Counter[str] = Counter()


def reached(point: str) -> None:
    """Count a pass through ``point``; the pass ``LSUN_CROWD_CRASH_AT`` names kills the process."""
    if _RECORD:
        _passes[point] += 1
    if _TARGET is None or _TARGET[0] != point:
        return
    if not _RECORD:
        _passes[point] += 1
    if _passes[point] == _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)


def _write_counts() -> None:
    if _RECORD:
        Path(_RECORD).write_text("".join(f"{point} {count}\n" for point, count in sorted(_passes.items())))


atexit.register(_write_counts)
