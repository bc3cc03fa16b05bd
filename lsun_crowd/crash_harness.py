"""The crash harness: seeded SIGKILLs at named points of every stage, each followed by a resume,
and every invariant checked against a run that was never interrupted.

A *chain* builds one small digits project on the simulated crowd and carries it through the
commands a user runs (``ingest``, ``ingest --gold``, ``run``, ``audit``). Each command is started
with ``LSUN_CROWD_CRASH_AT=POINT:N`` (:mod:`lsun_crowd.crashpoints`) for the kill points the seed
drew for it, one after another; a process that dies by ``SIGKILL`` is simply started again with
the next point, and one that finishes before its point came counts that point as not reached.
Then the command runs once more without a kill, to its end.

The reference is the same project run straight through. A chain passes when:

- every table that records crowd work and its outcome (HITs, assignments, votes, labels and
  their events, rounds, jobs, spend, blocked workers, repairs, audit figures) equals the
  reference's, row for row: no vote lost or stored twice, no HIT published twice, equal labels;
- the simulated platform created each HIT once (no batch published twice on its side either),
  paid each bonus token once, and debited exactly the money the store records as spent.

``benchmarks/crash.py`` runs many chains and prints the figures; ``tests/test_crash_points.py``
runs one short chain.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from lsun_crowd.crashpoints import ENVIRONMENT

# The points each command passes, in the order a run meets them (lsun_crowd.crashpoints).
RUN_POINTS = (
    "embed",
    "sample",
    "publish",
    "created:round",
    "collect",
    "listed",
    "polled",
    "review",
    "approving",
    "created:follow_up",
    "aggregate",
    "train",
    "score",
    "split",
    "store writes",
    "created:repair",
)
COMMAND_POINTS: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest",),
    "gold": ("ingest",),
    "run": RUN_POINTS,
    "audit": ("publish", "created:audit", "collect", "listed", "polled", "review", "approving"),
}
MOCK_STATE = "mock-crowd.sqlite"
BALANCE = Decimal("1000.00")  # what the simulated platform's account holds at the start
DATABASE = "lsun-crowd.db"

# What is compared with the reference, table by table (ids differ; content must not).
SNAPSHOT = {
    "hits": "SELECT h.batch_id, h.hit_key, h.platform_hit_id, h.state, "
    "(SELECT group_concat(i.sha256) FROM hit_items hi JOIN items i ON i.id = hi.item_id WHERE hi.hit_id = h.id) "
    "FROM hits h ORDER BY 1, 2",
    "assignments": "SELECT a.platform_assignment_id, w.platform_worker_id, a.status FROM assignments a "
    "JOIN workers w ON w.id = a.worker_id ORDER BY 1",
    "votes": "SELECT a.platform_assignment_id, i.sha256, c.name, v.answer, v.is_gold FROM votes v "
    "JOIN assignments a ON a.id = v.assignment_id JOIN items i ON i.id = v.item_id "
    "JOIN categories c ON c.id = v.category_id ORDER BY 1, 2, 3",
    "labels": "SELECT i.sha256, c.name, l.label, l.source, round(l.confidence, 6), l.votes, r.number FROM labels l "
    "JOIN items i ON i.id = l.item_id JOIN categories c ON c.id = l.category_id "
    "LEFT JOIN rounds r ON r.id = l.round_id ORDER BY 1, 2",
    "label_events": "SELECT i.sha256, e.category_id, e.label, e.source, e.origin, round(e.confidence, 6), e.votes "
    "FROM label_events e JOIN items i ON i.id = e.item_id ORDER BY 1, 2, 5, 3, 4",
    "rounds": "SELECT c.name, r.number, r.state, r.high_threshold, r.low_threshold FROM rounds r "
    "JOIN categories c ON c.id = r.category_id ORDER BY 1, 2",
    "jobs": "SELECT batch_id, kind, sequence, state, assignments_per_hit FROM jobs ORDER BY 1",
    "spend": "SELECT reference, kind, amount FROM spend ORDER BY 1, 2",
    "blocked": "SELECT platform_worker_id FROM workers WHERE blocked ORDER BY 1",
    "items": "SELECT sha256 FROM items ORDER BY 1",
    "gold": "SELECT i.sha256, g.category_id, g.answer FROM gold g JOIN items i ON i.id = g.item_id ORDER BY 1, 2",
    "repairs": "SELECT i.sha256, c.name, round(r.score, 6), round(r.model_evidence, 6), r.given_label, "
    "r.new_label, r.state FROM repairs r JOIN items i ON i.id = r.item_id JOIN categories c ON c.id = r.category_id "
    "ORDER BY 1, 2",
    "audit_results": "SELECT c.name, a.stratum, a.metric, a.n, round(a.estimate, 6), round(a.exact_low, 6), "
    "round(a.exact_high, 6) FROM audit_results a LEFT JOIN categories c ON c.id = a.category_id ORDER BY 1, 2, 3",
}


@dataclass
class Chain:
    """One chain's outcome: the kills that happened, the points never reached, what differed."""

    seed: int
    kills: list[str] = field(default_factory=list)  # "command POINT:N"
    not_reached: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def held(self) -> bool:
        return not self.differences


def _python_command(project: Path, command: str, audit_sample: int) -> list[str]:
    base = [sys.executable, "-m", "lsun_crowd.cli"]
    if command == "ingest":
        return [*base, "ingest", "--project", str(project), str(project / "images")]
    if command == "gold":
        return [
            *base,
            "ingest",
            "--project",
            str(project),
            "--gold",
            str(project / "gold.csv"),
            str(project / "images"),
        ]
    if command == "run":
        return [*base, "run", "--project", str(project)]
    return [*base, "audit", "--project", str(project), "--sample", str(audit_sample), "--votes", "3"]


def _execute(project: Path, command: str, audit_sample: int, point: str | None) -> int:
    environment = {key: value for key, value in os.environ.items() if key != ENVIRONMENT}
    if point is not None:
        environment[ENVIRONMENT] = point
    result = subprocess.run(
        _python_command(project, command, audit_sample),
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=900,
    )
    if result.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"{command} ({point or 'no kill'}) failed: {result.stderr.decode()[-2000:]}")
    return result.returncode


def make_project(directory: Path, *, limit: int, digits: int, sample: int, rounds: int) -> None:
    """A digits project on the simulated crowd, written but not ingested (ingest is a stage)."""
    from lsun_crowd.demo import write_pool
    from lsun_crowd.testing import digits_config, write_project

    directory.mkdir(parents=True, exist_ok=True)
    write_pool(directory, 0, limit, range(digits))
    # Loose targets, so that a pool this small pays for certification: the model trains, labels and
    # is certified, and every stage of that can be killed too.
    cascade = {
        "max_rounds": rounds,
        "confidence": 0.5,
        "target_precision": 0.9,
        "target_npv": 0.9,
        "target_recall": 0,
        "min_class_labels": 2,  # its first round holds a handful of each digit
    }
    overrides = {"cascade": cascade, "crowd": {"settings": {"balance": str(BALANCE)}}}
    config = digits_config(0, range(digits), sample_per_round=sample, overrides=overrides)
    write_project(directory, config)


def draw_kills(seed: int, per_command: dict[str, int], passes: dict[str, dict[str, int]]) -> dict[str, list[str]]:
    """For each command, ``per_command[command]`` kill points ``POINT:N``, N drawn from the passes
    the reference run made through POINT, in the order a run meets them."""
    rng = random.Random(seed)
    drawn: dict[str, list[str]] = {}
    for command, count in per_command.items():
        available = [point for point in COMMAND_POINTS[command] if passes.get(command, {}).get(point, 0)]
        chosen = sorted(rng.sample(available, min(count, len(available))), key=COMMAND_POINTS[command].index)
        # Each resumed process counts passes afresh, and has less left to do than a whole run: the
        # i-th kill of a command is drawn from the first 1/(i + 2) of the point's passes.
        drawn[command] = [
            f"{point}:{rng.randint(1, max(1, passes[command][point] // (index + 2)))}"
            for index, point in enumerate(chosen)
        ]
    return drawn


def count_passes(project: Path, commands: Sequence[str], audit_sample: int) -> dict[str, dict[str, int]]:
    """Run ``commands`` straight through, counting the passes through every point of each."""
    counts: dict[str, dict[str, int]] = {}
    for command in commands:
        counts[command] = {}
        record = project / f".passes-{command}"
        environment = dict(os.environ, LSUN_CROWD_CRASH_COUNTS=str(record))
        environment.pop(ENVIRONMENT, None)
        result = subprocess.run(
            _python_command(project, command, audit_sample), env=environment, capture_output=True, timeout=900
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command} failed: {result.stderr.decode()[-2000:]}")
        if record.exists():
            for line in record.read_text().splitlines():
                point, _, number = line.rpartition(" ")
                counts[command][point] = int(number)
            record.unlink()
    return counts


def run_chain(
    project: Path, seed: int, kills: dict[str, list[str]], commands: Sequence[str], audit_sample: int
) -> Chain:
    """Carry ``project`` through ``commands``, killed at each drawn point in turn."""
    chain = Chain(seed)
    started = time.monotonic()
    for command in commands:
        for point in kills.get(command, []):
            if _execute(project, command, audit_sample, point) == -signal.SIGKILL:
                chain.kills.append(f"{command} {point}")
            else:
                chain.not_reached.append(f"{command} {point}")
        _execute(project, command, audit_sample, None)
    chain.seconds = time.monotonic() - started
    return chain


IDENTITY = re.compile(r"#[0-9a-f]{8}:")


def same_identity(value: Any) -> Any:
    """Batch ids carry each project's random identity; the two projects compared differ only there."""
    return IDENTITY.sub("#:", value) if isinstance(value, str) else value


def snapshot(project: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(project / DATABASE) as db:
        return {
            table: [tuple(same_identity(value) for value in row) for row in db.execute(sql)]
            for table, sql in SNAPSHOT.items()
        }


def platform_ledger(project: Path) -> dict[str, Any]:
    """What the simulated platform itself recorded: HITs per batch and key, bonuses, money."""
    with sqlite3.connect(project / MOCK_STATE) as db:
        duplicated = db.execute(
            "SELECT COUNT(*) FROM (SELECT batch_id, hit_key FROM hits GROUP BY 1, 2 HAVING COUNT(*) > 1)"
        ).fetchone()[0]
        hits = db.execute("SELECT COUNT(*) FROM hits").fetchone()[0]
        bonuses = db.execute("SELECT COUNT(*), COUNT(DISTINCT token) FROM bonuses").fetchone()
        balance = Decimal(db.execute("SELECT value FROM meta WHERE key = 'balance'").fetchone()[0])
    return {
        "hits": hits,
        "duplicated hits": duplicated,
        "bonuses": bonuses[0],
        "bonus tokens": bonuses[1],
        "debited": BALANCE - balance,
    }


def check(project: Path, reference: Path) -> list[str]:
    """Every invariant of the module's docstring; the ones broken, described."""
    problems: list[str] = []
    got, expected = snapshot(project), snapshot(reference)
    for table, rows in expected.items():
        if got[table] != rows:
            missing = len(set(rows) - set(got[table]))
            extra = len(set(got[table]) - set(rows))
            problems.append(f"{table}: {missing} row(s) missing and {extra} extra against the uninterrupted run")
    ledger = platform_ledger(project)
    with sqlite3.connect(project / DATABASE) as db:
        stored_hits = db.execute("SELECT COUNT(*) FROM hits").fetchone()[0]
        spent = Decimal(str(db.execute("SELECT COALESCE(SUM(amount), 0) FROM spend").fetchone()[0]))
    if ledger["duplicated hits"]:
        problems.append(f"the platform holds {ledger['duplicated hits']} HIT(s) published twice")
    if ledger["hits"] != stored_hits:
        problems.append(f"the platform holds {ledger['hits']} HITs, the store {stored_hits}")
    if ledger["bonuses"] != ledger["bonus tokens"]:
        problems.append("a bonus token was paid twice")
    if ledger["debited"].quantize(Decimal("0.0001")) != spent.quantize(Decimal("0.0001")):
        problems.append(f"the platform debited {ledger['debited']}, the store records {spent} spent")
    return problems
