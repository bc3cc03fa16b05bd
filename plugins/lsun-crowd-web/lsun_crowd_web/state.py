"""The web crowd's queue: one SQLite file shared by the cascade (which publishes and collects) and
the server (which hands HITs to annotators and records what they submit).

A HIT goes to an annotator under a lease. Handing out and submitting are each one ``BEGIN
IMMEDIATE`` transaction, so however many annotators ask at once, a HIT never has more submitted
assignments plus live leases than the votes asked for, and an annotator never gets the same HIT
twice.

Each lease (and each qualification test shown to a worker) has a random form token, which the page
embeds and the submission must bring back: a new lease gets a new token, and submitting (or being
graded) spends it, so a forged or replayed form is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsun_crowd.crowd import AlreadyApproved, CrowdError, HitBatch, HitItem, QualificationResult, QualificationTest

SCHEMA = """
CREATE TABLE IF NOT EXISTS annotators (name TEXT PRIMARY KEY, token_hash TEXT UNIQUE NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS hits (
    hit_id TEXT PRIMARY KEY, batch_id TEXT NOT NULL, hit_key TEXT NOT NULL, category TEXT NOT NULL,
    question TEXT NOT NULL, items TEXT NOT NULL, requested INTEGER NOT NULL, test_id TEXT,
    expired INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, UNIQUE (batch_id, hit_key));
CREATE TABLE IF NOT EXISTS tests (test_id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    hit_id TEXT NOT NULL, worker TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (hit_id, worker));
CREATE TABLE IF NOT EXISTS assignments (
    assignment_id TEXT PRIMARY KEY, hit_id TEXT NOT NULL, worker TEXT NOT NULL, answers TEXT NOT NULL,
    status TEXT NOT NULL, feedback TEXT, accepted REAL NOT NULL, submitted REAL NOT NULL, UNIQUE (hit_id, worker));
CREATE TABLE IF NOT EXISTS blocks (worker TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS exclusions (hit_id TEXT NOT NULL, worker TEXT NOT NULL, PRIMARY KEY (hit_id, worker));
CREATE TABLE IF NOT EXISTS bonuses (token TEXT PRIMARY KEY, worker TEXT NOT NULL, amount TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hit_categories (hit_id TEXT PRIMARY KEY, categories TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS qualifications (
    test_id TEXT NOT NULL, worker TEXT NOT NULL, correct INTEGER NOT NULL, total INTEGER NOT NULL,
    passed INTEGER NOT NULL, PRIMARY KEY (test_id, worker));
CREATE TABLE IF NOT EXISTS form_tokens (
    worker TEXT NOT NULL, form TEXT NOT NULL, token TEXT NOT NULL, PRIMARY KEY (worker, form));
"""


@dataclass(frozen=True)
class QueuedHit:
    hit_id: str
    category: str
    question: str
    items: tuple[HitItem, ...]
    categories: tuple[str, ...] = ()  # a multi-label HIT's categories, asked all at once


def hit_form(hit_id: str) -> str:
    return f"hit:{hit_id}"


def test_form(test_id: str) -> str:
    return f"test:{test_id}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class WebState:
    def __init__(self, path: Path, lease_seconds: float = 1800.0) -> None:
        self.path = path
        self.lease_seconds = lease_seconds
        db = self._connect()
        try:
            db.executescript(SCHEMA)
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # transactions are explicit
        db.execute("PRAGMA journal_mode=WAL")
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: a writer at a time, committed or rolled back."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # -- annotators ---------------------------------------------------------------------------

    def add_annotator(self, name: str) -> str:
        """A new secret token for ``name`` (replacing any earlier one); only its hash is stored."""
        if not name.strip():
            raise CrowdError("an annotator needs a name")
        token = secrets.token_urlsafe(24)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO annotators VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash",
                (name.strip(), token_hash(token), time.time()),
            )
        return token

    def annotator(self, token: str) -> str | None:
        with self.transaction() as db:
            row = db.execute("SELECT name FROM annotators WHERE token_hash = ?", (token_hash(token),)).fetchone()
        return None if row is None else str(row[0])

    # -- the cascade's side -------------------------------------------------------------------

    def publish(self, batch: HitBatch) -> dict[str, str]:
        test_id = batch.qualification.test_id if batch.qualification else None
        with self.transaction() as db:
            if batch.qualification is not None:
                db.execute("INSERT OR IGNORE INTO tests VALUES (?, ?)", (test_id, _test_json(batch.qualification)))
            for spec in batch.hits:
                hit_id = "WEB" + hashlib.sha256(f"{batch.batch_id}\x1f{spec.hit_key}".encode()).hexdigest()[:24]
                items = json.dumps([[item.item_key, item.uri] for item in spec.items])
                db.execute(
                    "INSERT OR IGNORE INTO hits VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                    (
                        hit_id,
                        batch.batch_id,
                        spec.hit_key,
                        batch.category,
                        batch.question,
                        items,
                        batch.assignments_per_hit,
                        test_id,
                        time.time(),
                    ),
                )
                if batch.multi_label:
                    db.execute(
                        "INSERT OR IGNORE INTO hit_categories VALUES (?, ?)", (hit_id, json.dumps(batch.categories))
                    )
                db.executemany(
                    "INSERT OR IGNORE INTO exclusions VALUES (?, ?)",
                    [(hit_id, worker) for worker in sorted(spec.excluded_workers)],
                )
            rows = db.execute("SELECT hit_key, hit_id FROM hits WHERE batch_id = ?", (batch.batch_id,)).fetchall()
        return dict(rows)

    def hit_counts(self, hit_id: str) -> tuple[int, int, bool]:
        """Submitted assignments, votes asked, expired."""
        with self.transaction() as db:
            row = db.execute("SELECT requested, expired FROM hits WHERE hit_id = ?", (hit_id,)).fetchone()
            if row is None:
                raise CrowdError(f"no HIT {hit_id} in the web crowd's queue")
            done = db.execute("SELECT COUNT(*) FROM assignments WHERE hit_id = ?", (hit_id,)).fetchone()[0]
        return int(done), int(row[0]), bool(row[1])

    def assignments(self, hit_id: str) -> list[tuple[str, str, str, str, float, float]]:
        with self.transaction() as db:
            return db.execute(
                "SELECT assignment_id, worker, status, answers, accepted, submitted FROM assignments "
                "WHERE hit_id = ? ORDER BY assignment_id",
                (hit_id,),
            ).fetchall()

    def review(self, assignment_id: str, status: str, feedback: str | None) -> None:
        with self.transaction() as db:
            row = db.execute("SELECT status FROM assignments WHERE assignment_id = ?", (assignment_id,)).fetchone()
            if row is None:
                raise CrowdError(f"no assignment {assignment_id}")
            if row[0] == status:
                return
            if row[0] == "approved" and status == "rejected":
                raise AlreadyApproved(f"assignment {assignment_id} is approved and can no longer be rejected")
            if row[0] != "submitted":
                raise CrowdError(f"assignment {assignment_id} is {row[0]} and can no longer be {status}")
            db.execute(
                "UPDATE assignments SET status = ?, feedback = ? WHERE assignment_id = ?",
                (status, feedback, assignment_id),
            )

    def execute(self, sql: str, parameters: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self.transaction() as db:
            return db.execute(sql, parameters).fetchall()

    # -- the server's side --------------------------------------------------------------------

    def next_hit(self, worker: str) -> QueuedHit | None:
        """The worker's leased HIT if they hold one, else the oldest HIT they may still take,
        leased to them; ``None`` when there is nothing for them."""
        now = time.time()
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM blocks WHERE worker = ?", (worker,)).fetchone():
                return None
            db.execute("DELETE FROM leases WHERE expires < ?", (now,))
            db.execute(  # tokens of leases gone (expired, expired HITs, blocked workers)
                """DELETE FROM form_tokens WHERE form LIKE 'hit:%' AND NOT EXISTS (SELECT 1 FROM leases l
                   WHERE 'hit:' || l.hit_id = form_tokens.form AND l.worker = form_tokens.worker)"""
            )
            held = db.execute(
                "SELECT h.hit_id FROM leases l JOIN hits h ON h.hit_id = l.hit_id WHERE l.worker = ? AND h.expired = 0",
                (worker,),
            ).fetchone()
            if held is None:
                held = db.execute(
                    """SELECT h.hit_id FROM hits h
                       WHERE h.expired = 0
                         AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.hit_id = h.hit_id AND a.worker = :w)
                         AND NOT EXISTS (SELECT 1 FROM exclusions e WHERE e.hit_id = h.hit_id AND e.worker = :w)
                         AND (h.test_id IS NULL OR EXISTS (SELECT 1 FROM qualifications q
                              WHERE q.test_id = h.test_id AND q.worker = :w AND q.passed = 1))
                         AND (SELECT COUNT(*) FROM assignments a WHERE a.hit_id = h.hit_id)
                           + (SELECT COUNT(*) FROM leases l WHERE l.hit_id = h.hit_id) < h.requested
                       ORDER BY h.created, h.hit_id LIMIT 1""",
                    {"w": worker},
                ).fetchone()
                if held is None:
                    return None
                db.execute("INSERT INTO leases VALUES (?, ?, ?)", (held[0], worker, now + self.lease_seconds))
                db.execute(  # a new lease, a new token: a form from an earlier lease is stale
                    "INSERT OR REPLACE INTO form_tokens VALUES (?, ?, ?)",
                    (worker, hit_form(str(held[0])), secrets.token_urlsafe(32)),
                )
            return self._queued(db, str(held[0]))

    def pending_test(self, worker: str) -> QualificationTest | None:
        """A qualification test the worker must take before HITs waiting for them, if any."""
        with self.transaction() as db:
            row = db.execute(
                """SELECT t.body FROM tests t JOIN hits h ON h.test_id = t.test_id
                   WHERE h.expired = 0 AND NOT EXISTS (
                       SELECT 1 FROM qualifications q WHERE q.test_id = t.test_id AND q.worker = ?)
                   ORDER BY h.created LIMIT 1""",
                (worker,),
            ).fetchone()
        return None if row is None else _test_from_json(str(row[0]))

    def grade(self, worker: str, test: QualificationTest, answers: Mapping[str, str]) -> QualificationResult:
        result = test.grade(worker, answers)
        with self.transaction() as db:
            db.execute("DELETE FROM form_tokens WHERE worker = ? AND form = ?", (worker, test_form(test.test_id)))
            db.execute(
                "INSERT OR IGNORE INTO qualifications VALUES (?, ?, ?, ?, ?)",
                (test.test_id, worker, result.correct, result.total, int(result.passed)),
            )
        return result

    def hit(self, hit_id: str) -> QueuedHit | None:
        with self.transaction() as db:
            return self._queued(db, hit_id)

    def submit(self, worker: str, hit_id: str, answers: Mapping[str, str]) -> str:
        """Record the worker's answers to a HIT they hold; every image must be answered."""
        now = time.time()
        with self.transaction() as db:
            hit = self._queued(db, hit_id)
            lease = db.execute(
                "SELECT expires FROM leases WHERE hit_id = ? AND worker = ?", (hit_id, worker)
            ).fetchone()
            if hit is None or lease is None:
                raise CrowdError("this HIT is not yours (any more): it may have expired or been taken")
            keys = {item.item_key for item in hit.items}
            if set(answers) != keys:
                raise CrowdError(f"answer every image: {len(keys - set(answers))} unanswered")
            assignment_id = f"{hit_id}-{hashlib.sha256(worker.encode()).hexdigest()[:12]}"
            db.execute(
                "INSERT INTO assignments VALUES (?, ?, ?, ?, 'submitted', NULL, ?, ?)",
                (
                    assignment_id,
                    hit_id,
                    worker,
                    json.dumps(dict(answers), sort_keys=True),
                    lease[0] - self.lease_seconds,
                    now,
                ),
            )
            db.execute("DELETE FROM leases WHERE hit_id = ? AND worker = ?", (hit_id, worker))
            db.execute("DELETE FROM form_tokens WHERE worker = ? AND form = ?", (worker, hit_form(hit_id)))
        return assignment_id

    def holds_lease(self, worker: str, hit_id: str) -> bool:
        """Whether ``worker`` holds a live lease on ``hit_id`` (only they may see its images)."""
        with self.transaction() as db:
            return self._live_lease(db, worker, hit_id)

    def form_token(self, worker: str, form: str) -> str | None:
        """The token the page of ``form`` (:func:`hit_form`, :func:`test_form`) embeds for
        ``worker``: a HIT's needs a live lease; a test's is made on first showing."""
        with self.transaction() as db:
            kind, _, target = form.partition(":")
            if kind == "hit" and not self._live_lease(db, worker, target):
                return None
            db.execute(  # a lease from before form tokens existed gets one now
                "INSERT OR IGNORE INTO form_tokens VALUES (?, ?, ?)", (worker, form, secrets.token_urlsafe(32))
            )
            row = db.execute("SELECT token FROM form_tokens WHERE worker = ? AND form = ?", (worker, form)).fetchone()
        return str(row[0])

    def valid_form_token(self, worker: str, form: str, presented: str) -> bool:
        """Whether ``presented`` is ``worker``'s live token for ``form``, compared in constant time."""
        with self.transaction() as db:
            kind, _, target = form.partition(":")
            if kind == "hit" and not self._live_lease(db, worker, target):
                return False
            row = db.execute("SELECT token FROM form_tokens WHERE worker = ? AND form = ?", (worker, form)).fetchone()
        return row is not None and hmac.compare_digest(str(row[0]).encode(), presented.encode())

    @staticmethod
    def _live_lease(db: sqlite3.Connection, worker: str, hit_id: str) -> bool:
        return (
            db.execute(
                "SELECT 1 FROM leases WHERE hit_id = ? AND worker = ? AND expires >= ?", (hit_id, worker, time.time())
            ).fetchone()
            is not None
        )

    @staticmethod
    def _queued(db: sqlite3.Connection, hit_id: str) -> QueuedHit | None:
        row = db.execute("SELECT category, question, items FROM hits WHERE hit_id = ?", (hit_id,)).fetchone()
        if row is None:
            return None
        items = tuple(HitItem(str(key), str(uri)) for key, uri in json.loads(row[2]))
        asked = db.execute("SELECT categories FROM hit_categories WHERE hit_id = ?", (hit_id,)).fetchone()
        categories = tuple(json.loads(asked[0])) if asked else ()
        return QueuedHit(hit_id, str(row[0]), str(row[1]), items, categories)


def _test_json(test: QualificationTest) -> str:
    return json.dumps(
        {
            "test_id": test.test_id,
            "question": test.question,
            "items": [[item.item_key, item.uri] for item in test.items],
            "answers": dict(test.answers),
            "pass_mark": test.pass_mark,
        }
    )


def _test_from_json(body: str) -> QualificationTest:
    data = json.loads(body)
    items = tuple(HitItem(str(key), str(uri)) for key, uri in data["items"])
    return QualificationTest(data["test_id"], data["question"], items, data["answers"], float(data["pass_mark"]))
