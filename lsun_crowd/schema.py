"""The project store's tables (SQLAlchemy 2). Unique constraints make every write replayable."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 3


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
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    uri: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    # Set when the image can no longer be read (gone, corrupt, changed): it leaves the pool.
    problem: Mapped[str | None] = mapped_column(Text, nullable=True)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class Category(Base):
    __tablename__ = "categories"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)


class Round(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("category_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    human_only: Mapped[bool] = mapped_column(Boolean, default=False)
    high_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    low_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    notes: Mapped[str] = mapped_column(Text, default="")
    # Adaptive redundancy: follow-up batches published so far, and once the round is labeled,
    # the votes asked for its images against what fixed redundancy at the cap would have asked.
    follow_up: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    votes_requested: Mapped[int | None] = mapped_column(Integer, nullable=True)
    votes_fixed: Mapped[int | None] = mapped_column(Integer, nullable=True)
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


class RoundItem(Base):
    """An image a round sent to humans. Calibration images never train a model."""

    __tablename__ = "round_items"
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # "train" | "calibration"
    # A calibration image stays active while every later split would have left it unlabeled,
    # so the active ones remain a random sample of the current pool.
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Gold(Base):
    """Known answers, hidden inside HITs to measure workers."""

    __tablename__ = "gold"
    __table_args__ = (UniqueConstraint("item_id", "category_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    answer: Mapped[int] = mapped_column(Integer)


class Hit(Base):
    __tablename__ = "hits"
    __table_args__ = (UniqueConstraint("batch_id", "hit_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"))
    batch_id: Mapped[str] = mapped_column(String(200))
    hit_key: Mapped[str] = mapped_column(String(200))
    platform_hit_id: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    state: Mapped[str] = mapped_column(String(32), default="draft")  # draft|open|complete|expired
    assignments_requested: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class HitItem(Base):
    __tablename__ = "hit_items"
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
    __table_args__ = (UniqueConstraint("assignment_id", "item_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    answer: Mapped[int] = mapped_column(Integer)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)


class Label(Base):
    """The current label of an image for a category, and where it came from."""

    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("item_id", "category_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    label: Mapped[int] = mapped_column(Integer)  # 1 positive, 0 negative
    source: Mapped[str] = mapped_column(String(16))  # human|model|gold
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), nullable=True)
    confidence: Mapped[float] = mapped_column(Float)
    votes: Mapped[int] = mapped_column(Integer, default=0)


class Spend(Base):
    __tablename__ = "spend"
    __table_args__ = (UniqueConstraint("reference", "kind"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), nullable=True)
    reference: Mapped[str] = mapped_column(String(200))  # batch id, or bonus token
    kind: Mapped[str] = mapped_column(String(16))  # reward|fee|bonus
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 4))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
