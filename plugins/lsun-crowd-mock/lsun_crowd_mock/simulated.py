"""A simulated crowd platform: seeded, deterministic, and as messy as a real one.

Workers come in a mix: honest workers whose accuracy is drawn from a Beta distribution, spammers
who answer at random or always the same, and adversaries who answer mostly wrong. Some images are
ambiguous, and good workers disagree on them. Workers abandon or return assignments, some HITs
expire half-filled, and answers arrive after a latency measured on a virtual clock that advances
each time the platform is polled (``tick_seconds`` a poll), so nothing ever sleeps. Under
``lsun-crowd run`` the runner drives that clock (:class:`~lsun_crowd.crowd.VirtualClock`): time is
the runner's count of polls, kept in the project store, so a poll repeated after a crash sees the
platform as the first attempt did.

Everything a real platform would remember lives in a SQLite file, so a crashed and restarted
cascade talks to the same "platform" again. The outcome of each HIT (who works on it, what they
answer) is drawn when it is published, from the seed and the HIT's id alone, so it does not
depend on how often or in which order the platform is polled.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lsun_crowd import api
from lsun_crowd.api import IngestError, read_answers
from lsun_crowd.crowd import (
    NO,
    YES,
    AlreadyApproved,
    Assignment,
    AssignmentStatus,
    CostEstimate,
    CrowdError,
    HitBatch,
    HitState,
    HitStatus,
    PublishedHit,
    QualificationResult,
    QualificationTest,
    encode_choices,
)
from lsun_crowd.fees import FeeSchedule, batch_cost
from lsun_crowd.plugins import parse_crowd_settings

Truth = Callable[[str, str], bool]
EPOCH = 1_700_000_000.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hits (
    hit_id TEXT PRIMARY KEY, batch_id TEXT NOT NULL, hit_key TEXT NOT NULL, requested INTEGER NOT NULL,
    expires_at REAL, expired INTEGER NOT NULL DEFAULT 0, abandoned INTEGER NOT NULL, returned INTEGER NOT NULL,
    UNIQUE (batch_id, hit_key));
CREATE TABLE IF NOT EXISTS assignments (
    assignment_id TEXT PRIMARY KEY, hit_id TEXT NOT NULL, worker_id TEXT NOT NULL, accepted_at REAL NOT NULL,
    submitted_at REAL NOT NULL, answers TEXT NOT NULL, status TEXT NOT NULL, feedback TEXT);
CREATE TABLE IF NOT EXISTS qualifications (
    test_id TEXT NOT NULL, worker_id TEXT NOT NULL, correct INTEGER NOT NULL, total INTEGER NOT NULL,
    passed INTEGER NOT NULL, PRIMARY KEY (test_id, worker_id));
CREATE TABLE IF NOT EXISTS blocks (worker_id TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bonuses (
    token TEXT PRIMARY KEY, worker_id TEXT NOT NULL, assignment_id TEXT NOT NULL, amount TEXT NOT NULL,
    reason TEXT NOT NULL);
"""


class CrowdMix(BaseModel):
    """Who the simulated workers are, and how the platform behaves. All settings are optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = 0
    workers: int = Field(default=60, ge=3)
    honest: float = Field(default=0.82, ge=0, le=1)
    random_spammers: float = Field(default=0.06, ge=0, le=1)
    constant_spammers: float = Field(default=0.06, ge=0, le=1)
    adversaries: float = Field(default=0.06, ge=0, le=1)
    honest_accuracy_alpha: float = Field(default=40.0, gt=0)  # Beta(alpha, beta) accuracy, mean 0.964
    honest_accuracy_beta: float = Field(default=1.5, gt=0)
    ambiguous_fraction: float = Field(default=0.03, ge=0, le=1)
    ambiguous_skill: float = Field(default=0.5, ge=0, le=1)  # share of skill left on ambiguous images
    abandon_rate: float = Field(default=0.05, ge=0, lt=1)
    return_rate: float = Field(default=0.03, ge=0, lt=1)
    expire_rate: float = Field(default=0.02, ge=0, le=1)
    latency_seconds: float = Field(default=300.0, gt=0)
    tick_seconds: float = Field(default=600.0, gt=0)
    balance: Decimal = Field(default=Decimal("10000"), ge=0)
    fees: FeeSchedule = "mturk"  # MTurk's commission schedule (lsun_crowd.fees), or "none"
    truth_file: str | None = None
    state_file: str | None = None


def load_truth_file(path: Path) -> Truth:
    """Ground truth from a CSV with columns ``uri,category,label``, as gold files are written, or
    from a synthetic pool's recipe (``.json``, written by ``lsun-crowd simulate``)."""
    if path.suffix == ".json":
        try:
            return api.synthetic_truth(path)
        except ValueError as error:
            raise CrowdError(str(error)) from None
    try:
        table = {(uri, category): bool(label) for uri, category, label in read_answers(path)}
    except IngestError as error:
        raise CrowdError(str(error)) from None

    def truth(uri: str, category: str) -> bool:
        try:
            return table[(uri, category)]
        except KeyError:
            raise CrowdError(f"{path}: no ground truth for {uri} in category {category!r}") from None

    return truth


def _unit_hash(*parts: object) -> float:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


IDENTITY = re.compile(r"#[0-9a-f]{8}(?=:)")


def without_identity(name: str) -> str:
    """A batch or test id without the project's random identity (the ``#id`` after the project's
    name): the simulated crowd draws from the seed and what a batch asks, so that a project built
    twice from the same settings meets the same crowd (the demo's and the tests' reproducibility
    rest on it), while the platform's records still keep the two projects apart."""
    return IDENTITY.sub("", name, count=1)


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


class SimulatedCrowd:
    """The simulated platform. ``truth(uri, category)`` says what a perfect worker answers."""

    name = "mock"

    def __init__(self, truth: Truth, mix: CrowdMix | None = None, state_file: Path | None = None) -> None:
        self.truth = truth
        self.mix = mix or CrowdMix()
        self.kinds, self.skills = self._draw_workers()
        # Python's default isolation opens a transaction before each write; ``with self._db`` commits
        # it, or rolls it back on error.
        self._db = sqlite3.connect(str(state_file) if state_file else ":memory:")
        self._db.executescript(SCHEMA)
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('clock', '0')")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('balance', ?)", (str(self.mix.balance),))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], project_dir: Path) -> SimulatedCrowd:
        mix = parse_crowd_settings(CrowdMix, settings)
        if mix.truth_file is None:
            raise CrowdError("crowd.settings.truth_file: the simulated crowd needs a ground-truth CSV")
        truth_path = Path(mix.truth_file)
        truth_path = truth_path if truth_path.is_absolute() else project_dir / truth_path
        if not truth_path.is_file():
            raise CrowdError(f"crowd.settings.truth_file: {truth_path} does not exist")
        state = project_dir / (mix.state_file or "mock-crowd.sqlite")  # an absolute state_file wins
        return cls(load_truth_file(truth_path), mix, state)

    # -- the simulated population -------------------------------------------------------------

    def _draw_workers(self) -> tuple[list[str], np.ndarray]:
        mix = self.mix
        rng = _rng(mix.seed, "workers")
        shares = np.array([mix.honest, mix.random_spammers, mix.constant_spammers, mix.adversaries])
        if shares.sum() <= 0:
            raise CrowdError("crowd.settings: the worker mix is empty")
        exact = shares / shares.sum() * mix.workers
        counts = np.floor(exact).astype(int)
        # Largest remainders get the workers rounding left over, so the mix is as close as it can be.
        for kind in np.argsort(-(exact - counts), kind="stable")[: mix.workers - counts.sum()]:
            counts[kind] += 1
        kinds = [
            kind
            for kind, count in zip(("honest", "random", "constant", "adversary"), counts, strict=True)
            for _ in range(count)
        ]
        rng.shuffle(kinds)
        skills = rng.beta(mix.honest_accuracy_alpha, mix.honest_accuracy_beta, size=mix.workers)
        return kinds, np.maximum(skills, 0.5)

    @staticmethod
    def worker_id(index: int) -> str:
        return f"SIMW{index:05d}"

    def _answer(self, worker: int, uri: str, category: str, rng: np.random.Generator) -> str:
        truth = self.truth(uri, category)
        kind = self.kinds[worker]
        if kind == "random":
            return YES if rng.random() < 0.5 else NO
        if kind == "constant":
            return YES if worker % 3 == 0 else NO
        skill = float(self.skills[worker])
        # Difficulty belongs to the image, drawn from its file name so that copies of a pool agree.
        if _unit_hash(self.mix.seed, "ambiguous", uri.rsplit("/", 1)[-1], category) < self.mix.ambiguous_fraction:
            skill = 0.5 + (skill - 0.5) * self.mix.ambiguous_skill
        correct = rng.random() < skill
        if kind == "adversary":
            correct = not correct
        return (YES if truth else NO) if correct else (NO if truth else YES)

    def _answer_item(self, worker: int, uri: str, batch: HitBatch, rng: np.random.Generator) -> str:
        """Yes or no; on a multi-label batch, the categories the worker ticks: each one judged as
        its own yes/no question, so a worker errs on a group as they would on its categories."""
        if not batch.multi_label:
            return self._answer(worker, uri, batch.category, rng)
        return encode_choices(name for name in batch.categories if self._answer(worker, uri, name, rng) == YES)

    # -- storage ------------------------------------------------------------------------------

    def _clock(self) -> float:
        return float(self._db.execute("SELECT value FROM meta WHERE key='clock'").fetchone()[0])

    def _tick(self) -> float:
        """Each status request is one poll of virtual time, unless a runner drives the clock."""
        if self._db.execute("SELECT 1 FROM meta WHERE key='driven'").fetchone():
            return self._clock()
        with self._db:
            self._db.execute(
                "UPDATE meta SET value = CAST(value AS REAL) + ? WHERE key='clock'", (self.mix.tick_seconds,)
            )
        return self._clock()

    def set_clock(self, polls: int) -> None:
        """The runner's clock (:class:`~lsun_crowd.crowd.VirtualClock`): from the first call on, time
        is ``polls × tick_seconds`` and status requests no longer move it."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('driven', '1')")
            self._db.execute("UPDATE meta SET value=? WHERE key='clock'", (str(polls * self.mix.tick_seconds),))

    def clock_seconds(self) -> float:
        """Virtual seconds since the platform opened."""
        return self._clock()

    def _balance(self) -> Decimal:
        return Decimal(self._db.execute("SELECT value FROM meta WHERE key='balance'").fetchone()[0])

    def _debit(self, amount: Decimal) -> None:
        balance = self._balance()
        if amount > balance:
            raise CrowdError(f"insufficient funds: {amount} needed, {balance} available")
        self._db.execute("UPDATE meta SET value=? WHERE key='balance'", (str(balance - amount),))

    # -- the CrowdBackend interface -----------------------------------------------------------

    def estimate_cost(self, batch: HitBatch) -> CostEstimate:
        return batch_cost(batch, self.mix.fees)

    def balance(self) -> Decimal | None:
        return self._balance()

    def publish(self, batch: HitBatch) -> list[PublishedHit]:
        existing = dict(self._db.execute("SELECT hit_key, hit_id FROM hits WHERE batch_id=?", (batch.batch_id,)))
        if existing:
            return [PublishedHit(spec.hit_key, existing[spec.hit_key]) for spec in batch.hits]
        blocked = {row[0] for row in self._db.execute("SELECT worker_id FROM blocks")}
        now = self._clock()
        published = []
        with self._db:
            self._debit(self.estimate_cost(batch).total)
            for spec in batch.hits:
                content = f"{without_identity(batch.batch_id)}\x1f{spec.hit_key}"
                hit_id = "SIMH" + hashlib.sha256(content.encode()).hexdigest()[:24]
                # A worker kept off this HIT is, for it, as good as blocked: never offered it.
                self._simulate_hit(hit_id, batch, spec.hit_key, spec.items, blocked | spec.excluded_workers, now)
                published.append(PublishedHit(spec.hit_key, hit_id))
        return published

    def _simulate_hit(
        self, hit_id: str, batch: HitBatch, hit_key: str, items: Sequence[Any], kept_off: set[str], now: float
    ) -> None:
        mix = self.mix
        rng = _rng(mix.seed, "hit", hit_id)
        eligible = [w for w in range(mix.workers) if self.worker_id(w) not in kept_off]
        rng.shuffle(eligible)
        requested = batch.assignments_per_hit
        filled = requested
        expires_at = None
        if rng.random() < mix.expire_rate:
            filled = int(rng.integers(0, requested))
            expires_at = now + mix.latency_seconds * 4
        abandoned = returned = 0
        if batch.qualification is not None:
            # A worker takes the test once, when first offered a HIT carrying it; who fails sees none.
            test = batch.qualification
            eligible = [w for w in eligible if self._qualify(w, test, batch.category).passed]
        queue = iter(eligible)
        rows: list[tuple[str, str, str, float, float, str, str]] = []
        start = now
        while len(rows) < filled:
            worker = next(queue, None)
            if worker is None:
                break  # the whole eligible crowd has seen this HIT
            roll = rng.random()
            if roll < mix.abandon_rate:
                abandoned += 1
                continue
            if roll < mix.abandon_rate + mix.return_rate:
                returned += 1
                continue
            answers = {item.item_key: self._answer_item(worker, item.uri, batch, rng) for item in items}
            start += float(rng.exponential(mix.latency_seconds / 3))
            accepted = start
            submitted = accepted + float(rng.exponential(mix.latency_seconds))
            rows.append(
                (
                    f"{hit_id}A{len(rows):02d}",
                    hit_id,
                    self.worker_id(worker),
                    EPOCH + accepted,
                    EPOCH + submitted,
                    json.dumps(answers, sort_keys=True),
                    AssignmentStatus.SUBMITTED,
                )
            )
        if len(rows) < requested:
            # Work already accepted is still submitted after the HIT stops taking workers, so the
            # HIT only reads as expired once every drawn assignment is in, whenever it is polled.
            last_submission = max((row[4] - EPOCH for row in rows), default=now)
            expires_at = max(now + mix.latency_seconds * 4, last_submission)
        else:
            expires_at = None
        self._db.execute(
            "INSERT INTO hits VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
            (hit_id, batch.batch_id, hit_key, requested, expires_at, abandoned, returned),
        )
        self._db.executemany("INSERT INTO assignments VALUES (?, ?, ?, ?, ?, ?, ?, NULL)", rows)

    def _qualify(self, worker: int, test: QualificationTest, category: str) -> QualificationResult:
        """The worker's result on the test: taken now, or the one stored from the first attempt."""
        worker_id = self.worker_id(worker)
        row = self._db.execute(
            "SELECT correct, total, passed FROM qualifications WHERE test_id=? AND worker_id=?",
            (test.test_id, worker_id),
        ).fetchone()
        if row is not None:
            return QualificationResult(worker_id, row[0], row[1], bool(row[2]))
        rng = _rng(self.mix.seed, "qualification", without_identity(test.test_id), worker_id)
        given = {item.item_key: self._answer(worker, item.uri, category, rng) for item in test.items}
        result = test.grade(worker_id, given)
        self._db.execute(
            "INSERT INTO qualifications VALUES (?, ?, ?, ?, ?)",
            (test.test_id, worker_id, result.correct, result.total, int(result.passed)),
        )
        return result

    def qualification_results(self, test_id: str) -> list[QualificationResult]:
        rows = self._db.execute(
            "SELECT worker_id, correct, total, passed FROM qualifications WHERE test_id=? ORDER BY worker_id",
            (test_id,),
        )
        return [QualificationResult(worker, correct, total, bool(passed)) for worker, correct, total, passed in rows]

    def hit_status(self, hit_ids: Sequence[str]) -> list[HitStatus]:
        now = EPOCH + self._tick()
        statuses = []
        for hit_id in hit_ids:
            row = self._db.execute(
                "SELECT requested, expires_at, expired FROM hits WHERE hit_id=?", (hit_id,)
            ).fetchone()
            if row is None:
                raise CrowdError(f"no HIT {hit_id} on the simulated platform")
            requested, expires_at, expired = row
            submitted = self._db.execute(
                "SELECT COUNT(*) FROM assignments WHERE hit_id=? AND submitted_at<=?", (hit_id, now)
            ).fetchone()[0]
            if submitted >= requested:
                state = HitState.COMPLETE
            elif expired or (expires_at is not None and now >= EPOCH + expires_at):
                state = HitState.EXPIRED
            else:
                state = HitState.OPEN
            statuses.append(HitStatus(hit_id, state, submitted, requested))
        return statuses

    def list_assignments(self, hit_id: str) -> list[Assignment]:
        now = EPOCH + self._clock()
        rows = self._db.execute(
            "SELECT assignment_id, worker_id, accepted_at, submitted_at, answers, status FROM assignments "
            "WHERE hit_id=? AND submitted_at<=? ORDER BY assignment_id",
            (hit_id, now),
        ).fetchall()
        return [
            Assignment(aid, hit_id, worker, AssignmentStatus(status), json.loads(answers), accepted, submitted)
            for aid, worker, accepted, submitted, answers, status in rows
        ]

    def _review(self, assignment_id: str, status: AssignmentStatus, feedback: str | None) -> None:
        row = self._db.execute(
            "SELECT status FROM assignments WHERE assignment_id=? AND submitted_at<=?",
            (assignment_id, EPOCH + self._clock()),
        ).fetchone()
        if row is None:
            raise CrowdError(f"no submitted assignment {assignment_id}")
        if row[0] == status:
            return
        if row[0] == AssignmentStatus.APPROVED and status == AssignmentStatus.REJECTED:
            raise AlreadyApproved(f"assignment {assignment_id} is approved and can no longer be rejected")
        with self._db:
            self._db.execute(
                "UPDATE assignments SET status=?, feedback=? WHERE assignment_id=?", (status, feedback, assignment_id)
            )

    def approve(self, assignment_id: str, feedback: str | None = None) -> None:
        self._review(assignment_id, AssignmentStatus.APPROVED, feedback)

    def reject(self, assignment_id: str, feedback: str) -> None:
        if not feedback.strip():
            raise CrowdError("a rejection needs feedback for the worker")
        self._review(assignment_id, AssignmentStatus.REJECTED, feedback)

    def pay_bonus(self, worker_id: str, assignment_id: str, amount: Decimal, reason: str, token: str) -> None:
        if amount <= 0:
            raise CrowdError(f"a bonus must be positive, not {amount}")
        if self._db.execute("SELECT 1 FROM bonuses WHERE token=?", (token,)).fetchone():
            return
        owner = self._db.execute("SELECT worker_id FROM assignments WHERE assignment_id=?", (assignment_id,)).fetchone()
        if owner is None or owner[0] != worker_id:
            raise CrowdError(f"worker {worker_id} did not submit assignment {assignment_id}")
        with self._db:
            self._debit(amount)
            self._db.execute(
                "INSERT INTO bonuses VALUES (?, ?, ?, ?, ?)", (token, worker_id, assignment_id, str(amount), reason)
            )

    def block_worker(self, worker_id: str, reason: str) -> None:
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO blocks VALUES (?, ?)", (worker_id, reason))

    def unblock_worker(self, worker_id: str, reason: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM blocks WHERE worker_id=?", (worker_id,))

    def is_blocked(self, worker_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM blocks WHERE worker_id=?", (worker_id,)).fetchone() is not None

    def expire(self, hit_ids: Sequence[str]) -> None:
        now = EPOCH + self._clock()
        with self._db:
            for hit_id in hit_ids:
                self._db.execute("UPDATE hits SET expired=1 WHERE hit_id=?", (hit_id,))
                # Work not yet submitted will never arrive.
                self._db.execute("DELETE FROM assignments WHERE hit_id=? AND submitted_at>?", (hit_id, now))

    def close(self) -> None:
        self._db.close()
