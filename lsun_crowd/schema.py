"""The project store's tables (SQLAlchemy 2), and the states and roles their rows take.

This module is the only owner of the schema: every table, index and state name is declared here.
Unique constraints make every write replayable; an index backs every query the runner, ``status``
and ``export`` make, so none of them scans a table that grows with the pool.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lsun_crowd.crowd import AssignmentStatus, HitState

SCHEMA_VERSION = 14

__all__ = ["AssignmentStatus", "HitState"]  # re-exported: every state the store holds is named here


HIT_DRAFT = "draft"  # laid out in the store, not on the platform yet


class RoundState(enum.StrEnum):
    """A round, in order. While its crowd work runs, the round is in its current job's state."""

    SAMPLED = "sampled"  # images drawn; the current job is laid out and waits for the money check
    PUBLISHING = "publishing"  # the money check passed; its HITs go out
    PUBLISHED = "published"  # HITs are out; votes are stored as they arrive
    COLLECTED = "collected"  # every HIT of the current job is complete or expired
    REVIEWED = "reviewed"  # gold scored, workers judged, work approved or rejected
    LABELED = "labeled"  # human labels stored; the model trains and splits next
    DONE = "done"
    STOPPED = "stopped"  # the budget or the balance could not pay for the current job


class JobState(enum.StrEnum):
    """One unit of crowd work: laid out, checked for money, published, collected, reviewed."""

    PENDING = "pending"  # HITs laid out in the store, nothing posted yet
    STOPPED = "stopped"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    COLLECTED = "collected"
    REVIEWED = "reviewed"


class JobKind(enum.StrEnum):
    ROUND = "round"  # a round's first batch
    FOLLOW_UP = "follow_up"  # more votes for a round's images still uncertain
    AUDIT = "audit"  # fresh workers check a random sample of final labels
    REPAIR = "repair"  # more votes from new workers for labels that look wrong, or that conflict


class RoundKind(enum.StrEnum):
    SPLIT = "split"  # a sample of the pool labeled by people, then the model trains and splits the pool
    CERTIFY = "certify"  # a sample of the model's labels checked by people, then the labels are certified


class ItemRole(enum.StrEnum):
    TRAIN = "train"
    CALIBRATION = "calibration"
    CANDIDATE = "candidate"  # a guided round's likeliest image of the rarer class (lsun_crowd.guided)


class LabelSource(enum.StrEnum):
    HUMAN = "human"
    MODEL = "model"
    GOLD = "gold"


class GuaranteeSide(enum.StrEnum):
    POSITIVE = "positive"  # auto-positives: their precision
    NEGATIVE = "negative"  # auto-negatives: their negative predictive value and the recall they keep


class SpendKind(enum.StrEnum):
    REWARD = "reward"
    FEE = "fee"
    BONUS = "bonus"


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (Index("ix_items_uri", "uri"),)  # gold answers and exports find images by path
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    uri: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    # The file's size and modification time when ingest hashed it: while both are unchanged,
    # embedding trusts the hash instead of hashing the file again. Empty for images ingested
    # before schema version 6.
    file_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    file_mtime_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Set when the image can no longer be read (gone, corrupt, changed): it leaves the pool.
    problem: Mapped[str | None] = mapped_column(Text, nullable=True)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


CATEGORY_NAME_LENGTH = 200  # the longest category name the store holds (the config refuses longer ones)


class Category(Base):
    __tablename__ = "categories"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(CATEGORY_NAME_LENGTH), unique=True)


class Round(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("category_id", "number"), Index("ix_rounds_state", "state"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    human_only: Mapped[bool] = mapped_column(Boolean, default=False)
    kind: Mapped[str] = mapped_column(String(16), default=RoundKind.SPLIT, server_default=RoundKind.SPLIT)
    high_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    low_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    notes: Mapped[str] = mapped_column(Text, default="")
    # Adaptive redundancy: follow-up batches published so far, and once the round is labeled,
    # the votes asked for its images against what fixed redundancy at the cap would have asked.
    follow_up: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    votes_requested: Mapped[int | None] = mapped_column(Integer, nullable=True)
    votes_fixed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The category's pool when the round was sampled: a first round's sample is a uniform draw from
    # it, which bounds the category's positives (lsun_crowd.certify.sampled_positives).
    pool_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RoundModel(Base):
    """The head a round trained, and its Platt scaling on the calibration labels still active after
    its split: the next round's humans vote with this model as one more annotator."""

    __tablename__ = "round_models"
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), primary_key=True)
    head: Mapped[bytes] = mapped_column(LargeBinary)
    platt_slope: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: too few labels
    platt_intercept: Mapped[float | None] = mapped_column(Float, nullable=True)
    base_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    calibration_size: Mapped[int] = mapped_column(Integer)
    # How often people's labels contradicted the model where it was sure (out of fold, calibrated
    # probability within 0.001 of 0 or 1): what a certification of its labels should
    # expect people to call wrong however right the model is (lsun_crowd.certify).
    # How often people's labels are expected to contradict its split's negatives: measured on its
    # out-of-fold scores there, at least the rate where it was sure (lsun_crowd.autolabel.economical)
    disagreement: Mapped[float | None] = mapped_column(Float, nullable=True)
    disagreement_positive: Mapped[float | None] = mapped_column(Float, nullable=True)  # ... positives


class RoundTest(Base):
    """What a round's split certified on one side, and the error budget it spent doing so
    (see :mod:`lsun_crowd.guarantee`). One row per round and side once the round has split."""

    __tablename__ = "round_tests"
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), primary_key=True)
    side: Mapped[str] = mapped_column(String(16), primary_key=True)  # a GuaranteeSide
    mode: Mapped[str] = mapped_column(String(16))  # "ltt" or "conformal"
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)  # logit; None: nothing certified
    target: Mapped[float] = mapped_column(Float)  # precision or NPV asked for
    delta: Mapped[float] = mapped_column(Float)  # the error budget this test was run at
    recall_slack: Mapped[float | None] = mapped_column(Float, nullable=True)  # share of positives it may discard
    calibration_size: Mapped[int] = mapped_column(Integer)  # the round's calibration images
    unresolved: Mapped[int] = mapped_column(Integer, default=0)  # of them, counted against the model
    tested: Mapped[int] = mapped_column(Integer, default=0)  # calibration images the threshold decides
    errors: Mapped[int] = mapped_column(Integer, default=0)  # of those, wrong (or unresolved)
    p_value: Mapped[float | None] = mapped_column(Float, nullable=True)  # of the certified threshold
    bound: Mapped[float | None] = mapped_column(Float, nullable=True)  # exact bound at 1 - delta
    labeled: Mapped[int] = mapped_column(Integer, default=0)  # pool images the threshold labeled


class CertificationItem(Base):
    """A model label drawn for a certification round (:mod:`lsun_crowd.certify`): the label and
    confidence the model gave, kept here because the image's label is withdrawn while people
    check it, and then becomes theirs."""

    __tablename__ = "certification_items"
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    label: Mapped[int] = mapped_column(Integer)  # the model's: 1 positive, 0 negative
    confidence: Mapped[float] = mapped_column(Float)
    model_round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"))  # the split that gave it
    look: Mapped[int] = mapped_column(Integer, default=1)  # 2: checked only if the first look did not certify


class RoundItem(Base):
    """An image a round sent to humans. Calibration images never train a model."""

    __tablename__ = "round_items"
    __table_args__ = (Index("ix_round_items_item", "item_id"),)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # "train" | "calibration" | "candidate"
    # A calibration image stays active while every later split would have left it unlabeled,
    # so the active ones remain a random sample of the current pool.
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Gold(Base):
    """Known answers, hidden inside HITs to measure workers."""

    __tablename__ = "gold"
    __table_args__ = (UniqueConstraint("item_id", "category_id"), Index("ix_gold_category", "category_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    answer: Mapped[int] = mapped_column(Integer)


class Job(Base):
    """A unit of crowd work with its own HITs: a round's first batch, a follow-up batch, and later
    audits and repairs. Its batch id names it on the platform; its state moves as in
    :class:`JobState`, each step committed with the work that reached it."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state", "state"), Index("ix_jobs_round", "round_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    sequence: Mapped[int] = mapped_column(Integer, default=0)  # 0: a round's first batch; k: follow-up k
    batch_id: Mapped[str] = mapped_column(String(200), unique=True)
    state: Mapped[str] = mapped_column(String(16))
    assignments_per_hit: Mapped[int] = mapped_column(Integer)
    # Reserved by the money check and not yet booked as spend: counted against the budget until
    # the publish records what was spent, so jobs checked side by side never overspend together.
    reserved: Mapped[Decimal | None] = mapped_column(Numeric(12, 4), nullable=True)
    collect_deadline: Mapped[float | None] = mapped_column(Float, nullable=True)  # seconds since the epoch
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class Hit(Base):
    __tablename__ = "hits"
    __table_args__ = (
        UniqueConstraint("batch_id", "hit_key"),
        Index("ix_hits_job_state", "job_id", "state"),
        Index("ix_hits_round", "round_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # A round's HITs name their round; those of jobs outside a round (audits) do not.
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), nullable=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    batch_id: Mapped[str] = mapped_column(String(200))
    hit_key: Mapped[str] = mapped_column(String(200))
    platform_hit_id: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    state: Mapped[str] = mapped_column(String(32), default=HIT_DRAFT)  # draft, then a HitState
    assignments_requested: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class HitItemRow(Base):
    __tablename__ = "hit_items"
    __table_args__ = (Index("ix_hit_items_item", "item_id"),)
    hit_id: Mapped[int] = mapped_column(ForeignKey("hits.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)


class Worker(Base):
    __tablename__ = "workers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform_worker_id: Mapped[str] = mapped_column(String(200), unique=True)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_correct: Mapped[int] = mapped_column(Integer, default=0)
    gold_wrong: Mapped[int] = mapped_column(Integer, default=0)


class AssignmentRow(Base):
    __tablename__ = "assignments"
    __table_args__ = (Index("ix_assignments_hit", "hit_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform_assignment_id: Mapped[str] = mapped_column(String(200), unique=True)
    hit_id: Mapped[int] = mapped_column(ForeignKey("hits.id"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    status: Mapped[str] = mapped_column(String(16))  # submitted|approved|rejected
    accepted_at: Mapped[float] = mapped_column(Float)
    submitted_at: Mapped[float] = mapped_column(Float)
    gold_scored: Mapped[bool] = mapped_column(Boolean, default=False)


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("assignment_id", "item_id"),
        Index("ix_votes_category", "category_id"),
        Index("ix_votes_item", "item_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    answer: Mapped[int] = mapped_column(Integer)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)


class Label(Base):
    """The current label of an image for a category, and where it came from: the view of
    :class:`LabelEvent` that every reader uses, kept by :mod:`lsun_crowd.ledger` in the same
    transaction as the event that set it."""

    __tablename__ = "labels"
    __table_args__ = (
        UniqueConstraint("item_id", "category_id"),
        Index("ix_labels_category_label", "category_id", "label", "source"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    label: Mapped[int] = mapped_column(Integer)  # 1 positive, 0 negative
    source: Mapped[str] = mapped_column(String(16))  # human|model|gold
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), nullable=True)
    confidence: Mapped[float] = mapped_column(Float)
    votes: Mapped[int] = mapped_column(Integer, default=0)
    # The model's part of a human label's log-odds (see lsun_crowd.consensus.model_share): 0 where
    # people's votes alone decided; negative where the model argued against the label.
    model_share: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class LabelCount(Base):
    """How many current labels a category has of each value and source: kept by
    :mod:`lsun_crowd.ledger` beside every write to :class:`Label`, so ``status`` reads a handful
    of rows instead of scanning a million-image category's labels."""

    __tablename__ = "label_counts"
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"), primary_key=True)
    label: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class OpenItem(Base):
    """An image that had no label and was not gold for a category when its pool was last settled
    (:func:`lsun_crowd.ledger.settle_pool`, at the end of every split): what later rounds read
    instead of the whole items table. A superset of the pool's settled part, never the pool
    itself: readers still check each row's label, gold, readability and waiting round."""

    __tablename__ = "open_items"
    __table_args__ = ({"sqlite_with_rowid": False},)  # the key is the row: no rowid beside it
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)


class PoolMark(Base):
    """How far a category's :class:`OpenItem` rows reach: every image with an id up to
    ``settled_through`` that is open for the category has its row; images after it (ingested
    since) are read from the items table. No row: nothing settled yet, the whole table is read."""

    __tablename__ = "pool_marks"
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"), primary_key=True)
    settled_through: Mapped[int] = mapped_column(Integer, default=0)


class LabelEvent(Base):
    """Every label ever given, append-only: a later audit or repair adds an event that revises
    the current label and keeps this history. ``origin`` names what decided it (a round's human
    labeling or split, a job), once per image and category, so a replayed step adds nothing."""

    __tablename__ = "label_events"
    __table_args__ = (
        UniqueConstraint("item_id", "category_id", "origin"),
        Index("ix_label_events_category", "category_id", "item_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    label: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(64))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), nullable=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    confidence: Mapped[float] = mapped_column(Float)
    votes: Mapped[int] = mapped_column(Integer, default=0)
    model_share: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


# -- audits (lsun_crowd.audit) -----------------------------------------------------------------------
# An audit checks a random sample of final labels with fresh workers. The sample and the strata it
# was drawn from are stored before any HIT is published, so a resumed audit reuses its sample.


class AuditState(enum.StrEnum):
    SAMPLED = "sampled"  # sample and strata stored; its jobs are laid out and go out next
    COLLECTING = "collecting"  # its jobs are published; answers arrive
    DONE = "done"  # answers aggregated, results stored


class Audit(Base):
    __tablename__ = "audits"
    __table_args__ = (UniqueConstraint("sample_size", "seed"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sample_size: Mapped[int] = mapped_column(Integer)  # asked for
    seed: Mapped[int] = mapped_column(Integer)
    votes_per_item: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)  # intervals at 1 - alpha
    state: Mapped[str] = mapped_column(String(16))  # an AuditState
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditStratum(Base):
    """A stratum of final labels (a category's labels of one source and value) as it stood when the
    sample was drawn: its size and the sums of ``labels.confidence`` over it, which the
    prediction-powered intervals use, so results never depend on labels changed since."""

    __tablename__ = "audit_strata"
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id"), primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"), primary_key=True)
    stratum: Mapped[str] = mapped_column(String(32), primary_key=True)  # e.g. "model-positive"
    size: Mapped[int] = mapped_column(Integer)
    sampled: Mapped[int] = mapped_column(Integer)
    confidence_sum: Mapped[float] = mapped_column(Float)
    confidence_square_sum: Mapped[float] = mapped_column(Float)


class AuditItem(Base):
    """A sampled final label, as it was when drawn, and what the audit's workers made of it."""

    __tablename__ = "audit_items"
    __table_args__ = (Index("ix_audit_items_job", "job_id"),)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"), primary_key=True)
    stratum: Mapped[str] = mapped_column(String(32))
    label: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[float] = mapped_column(Float)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    yes_votes: Mapped[int | None] = mapped_column(Integer, nullable=True)  # set once aggregated
    no_votes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    audit_label: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: the audit could not tell


class AuditFollowUp(Base):
    """A follow-up job of an audit (:mod:`lsun_crowd.audit.run`): more votes, from fresh workers,
    for the images of a category its votes could not settle. The first job of each category is
    :attr:`AuditItem.job_id`."""

    __tablename__ = "audit_follow_ups"
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)  # 1 for the first follow-up of a category, and so on


class AuditResult(Base):
    """One reported figure: a metric of a stratum (or of all strata, ``"all"``) of a category (or
    of every category, ``category_id`` null), with its exact and prediction-powered intervals."""

    __tablename__ = "audit_results"
    __table_args__ = (UniqueConstraint("audit_id", "category_id", "stratum", "metric"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id"))
    category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id"), nullable=True)
    stratum: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(16))  # precision | npv | recall
    n: Mapped[int] = mapped_column(Integer)  # audited labels behind the figure
    estimate: Mapped[float | None] = mapped_column(Float, nullable=True)
    exact_low: Mapped[float] = mapped_column(Float)
    exact_high: Mapped[float] = mapped_column(Float)
    ppi_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    ppi_high: Mapped[float | None] = mapped_column(Float, nullable=True)


class RunLock(Base):
    """Who is running the project now: one row while a ``run`` holds it (see :mod:`lsun_crowd.lock`)."""

    __tablename__ = "run_lock"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)  # the holder's process start, to tell a reused pid
    heartbeat_at: Mapped[float] = mapped_column(Float)


class Spend(Base):
    __tablename__ = "spend"
    __table_args__ = (UniqueConstraint("reference", "kind"), Index("ix_spend_round", "round_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), nullable=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    reference: Mapped[str] = mapped_column(String(200))  # batch id, or bonus token
    kind: Mapped[str] = mapped_column(String(16))  # reward|fee|bonus
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 4))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class GroupJob(Base):
    """A multi-label job: the group of mutually exclusive categories it asks about all at once, in
    the order shown. Its answers are :class:`ChoiceVote` rows, not :class:`Vote` rows."""

    __tablename__ = "group_jobs"
    __table_args__ = (Index("ix_group_jobs_group", "group_name"),)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    group_name: Mapped[str] = mapped_column(String(100))
    categories: Mapped[str] = mapped_column(Text)  # JSON list of category names
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resolved: Mapped[int] = mapped_column(Integer, default=0)  # images its answers settled
    unresolved: Mapped[int] = mapped_column(Integer, default=0)  # images they left in conflict


class ChoiceVote(Base):
    """One multi-label answer: the categories (JSON list, see :func:`lsun_crowd.crowd.encode_choices`)
    a worker ticked for one image of a :class:`GroupJob`'s HIT; ``[]`` is "none of these"."""

    __tablename__ = "choice_votes"
    __table_args__ = (UniqueConstraint("assignment_id", "item_id"), Index("ix_choice_votes_job", "job_id", "item_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    choices: Mapped[str] = mapped_column(Text)


# -- label-error repair (lsun_crowd.repair) ----------------------------------------------------------
# A repair pass scores a category's human labels out of fold, flags the likely wrong ones by
# confident learning, and sends them to fresh workers in repair jobs, stage after stage, until the
# votes settle them or their cap is reached. Any change is a new label event; these tables say what
# was flagged, sent and changed.


class RepairPassState(enum.StrEnum):
    OPEN = "open"  # its current job is out with the crowd, or waits to be settled
    STOPPED = "stopped"  # the budget or the balance could not pay for its current job
    DONE = "done"


class RepairState(enum.StrEnum):
    FLAGGED = "flagged"  # a suspect beyond the pass's cap: not sent, may be flagged again later
    SENT = "sent"  # in a repair job; votes pending
    CHANGED = "changed"  # the new votes settled on the other label, which replaced the given one
    KEPT = "kept"  # the new votes confirmed the given label
    UNRESOLVED = "unresolved"  # still uncertain at the cap of votes: the given label stays
    STOPPED = "stopped"  # its job could not be paid for


class RepairPass(Base):
    """One look for label errors in a category: after a round (``round_id``) or asked for by
    ``lsun-crowd repair`` (null)."""

    __tablename__ = "repair_passes"
    __table_args__ = (UniqueConstraint("category_id", "round_id"), Index("ix_repair_passes_state", "state"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), nullable=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)  # its current job
    state: Mapped[str] = mapped_column(String(16))  # a RepairPassState
    scored: Mapped[int] = mapped_column(Integer, default=0)  # human labels scored out of fold
    flagged: Mapped[int] = mapped_column(Integer, default=0)  # of them, suspects
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class Repair(Base):
    """A human label confident learning flagged: its out-of-fold score (the model's probability of
    positive), the label it had, and what the repair made of it."""

    __tablename__ = "repairs"
    __table_args__ = (
        UniqueConstraint("pass_id", "item_id"),
        Index("ix_repairs_category_item", "category_id", "item_id"),
        Index("ix_repairs_job", "job_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pass_id: Mapped[int] = mapped_column(ForeignKey("repair_passes.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)  # its latest job
    score: Mapped[float] = mapped_column(Float)
    # The out-of-fold model's evidence for positive, in nats, Platt-calibrated on the category's
    # human labels; null for a calibration image, which people alone decide.
    model_evidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    given_label: Mapped[int] = mapped_column(Integer)
    new_label: Mapped[int | None] = mapped_column(Integer, nullable=True)  # set once settled
    state: Mapped[str] = mapped_column(String(16))  # a RepairState
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
