"""A run killed for real (SIGKILL) mid-round and resumed ends exactly where an uninterrupted run does."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from lsun_crowd.crash_harness import snapshot  # the tables the crash harness compares, ids left out

from .conftest import make_digits_project

# Polls 0.1 s apart, 100 virtual seconds each: slow enough to be killed at the points chosen.
SLOW_CROWD = {"crowd": {"poll_seconds": 0.1, "settings": {"tick_seconds": 100}}}


def configure(directory: Path) -> None:
    make_digits_project(
        directory,
        limit=600,
        digits=range(2),
        sample=150,
        overrides=SLOW_CROWD,
    )


def start(directory: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "lsun_crowd.cli", "run", "--project", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def query(directory: Path, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{directory / 'lsun-crowd.db'}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute(sql).fetchone()[0] or 0)
    except sqlite3.OperationalError:
        return 0  # the store does not exist yet


def kill_when(process: subprocess.Popen[bytes], directory: Path, sql: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while query(directory, sql) == 0:
        assert process.poll() is None, f"the run ended before the kill point: {process.stderr.read()!r}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def finish(directory: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lsun_crowd.cli", "run", "--project", str(directory)], capture_output=True, timeout=600
    )
    assert result.returncode == 0, result.stderr.decode()


def finish_both_alike(interrupted: Path, reference: Path) -> dict[str, list[tuple[object, ...]]]:
    """Finish the killed project and the uninterrupted one; they must be equal, table by table."""
    finish(interrupted)
    finish(reference)
    got, expected = snapshot(interrupted), snapshot(reference)
    for table in expected:
        assert got[table] == expected[table], f"{table} differ after the kills"
    return expected


def test_killed_and_resumed_run_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"
    configure(interrupted)
    configure(reference)

    run = start(interrupted)
    # Kill 1: mid-collection of the first round, some votes stored, the round not finished.
    kill_when(run, interrupted, "SELECT COUNT(*) FROM votes v JOIN rounds r ON r.state = 'published'")
    killed_votes = query(interrupted, "SELECT COUNT(*) FROM votes")
    assert killed_votes > 0
    run = start(interrupted)
    # Kill 2: a later round mid-collection, after the model has labeled images.
    kill_when(
        run,
        interrupted,
        "SELECT COUNT(*) FROM rounds r WHERE r.number >= 2 AND r.state = 'published' "
        "AND EXISTS (SELECT 1 FROM labels WHERE source = 'model')",
    )
    expected = finish_both_alike(interrupted, reference)
    assert len(expected["votes"]) > 1000 and len(expected["hits"]) > 50
    assert any(label[3] == "model" for label in expected["labels"])
    assert all(row[2] == "done" for row in expected["rounds"])


OUT_AT_ONCE = (
    "SELECT COUNT(DISTINCT j.category_id) >= 3 FROM jobs j JOIN hits h ON h.job_id = j.id "
    "WHERE j.state = 'published' AND h.state = 'open' "
    "AND EXISTS (SELECT 1 FROM votes v WHERE v.category_id = j.category_id)"
)


def test_killed_with_three_categories_out_resumes_exactly(tmp_path: Path) -> None:
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"
    for directory in (interrupted, reference):
        make_digits_project(
            directory,
            limit=400,
            digits=range(3),
            sample=100,
            overrides=SLOW_CROWD,
        )

    run = start(interrupted)
    # Kill 1: HITs of all three categories out, votes of each arriving.
    kill_when(run, interrupted, OUT_AT_ONCE)
    assert query(interrupted, OUT_AT_ONCE) == 1
    run = start(interrupted)
    # Kill 2: a follow-up batch of a later round out.
    kill_when(
        run,
        interrupted,
        "SELECT COUNT(*) FROM jobs j JOIN rounds r ON r.id = j.round_id "
        "WHERE j.kind = 'follow_up' AND j.state = 'published' AND r.number >= 2",
    )
    expected = finish_both_alike(interrupted, reference)
    assert len(expected["rounds"]) >= 6 and len(expected["votes"]) > 1000
    assert {row[0] for row in expected["rounds"]} == {"digit-0", "digit-1", "digit-2"}
