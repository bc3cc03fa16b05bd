"""A real version-3 store (written by the code before jobs) upgrades to jobs and label events."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import func, select, update

from lsun_crowd.ledger import current_label
from lsun_crowd.schema import (
    SCHEMA_VERSION,
    Hit,
    HitItemRow,
    Item,
    Job,
    JobKind,
    JobState,
    Label,
    LabelEvent,
    Meta,
    Round,
    Spend,
)
from lsun_crowd.store import Store

V3_DUMP = Path(__file__).parent / "data" / "store-v3.sql"


def v3_store(tmp_path: Path) -> Path:
    path = tmp_path / "lsun-crowd.db"
    with sqlite3.connect(path) as db:
        db.executescript(V3_DUMP.read_text())
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
        counts = {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in ("hits", "labels")}
    db.close()
    assert counts["hits"] > 100 and counts["labels"] > 300
    return path


def test_a_version_3_store_gets_jobs_for_every_batch_and_label_events(tmp_path: Path) -> None:
    path = v3_store(tmp_path)
    with sqlite3.connect(path) as db:
        batches = db.execute("SELECT DISTINCT batch_id FROM hits ORDER BY batch_id").fetchall()
        labels = db.execute("SELECT item_id, category_id, label, source, round_id FROM labels ORDER BY 1, 2").fetchall()
        spend = db.execute("SELECT COUNT(*), SUM(amount) FROM spend").fetchone()
        hit_items = db.execute("SELECT COUNT(*) FROM hit_items").fetchone()[0]
    db.close()

    store = Store(f"sqlite:///{path}")
    with store.session() as session:
        assert session.get(Meta, "schema_version").value == str(SCHEMA_VERSION)  # type: ignore[union-attr]
        jobs = {job.batch_id: job for job in session.scalars(select(Job))}
        assert sorted(jobs) == [batch for (batch,) in batches]
        # Every HIT belongs to the job of its batch, and every spend row to the job it paid for.
        assert session.scalar(select(func.count(Hit.id)).where(Hit.job_id.is_(None))) == 0
        mismatched = session.scalar(
            select(func.count(Hit.id)).join(Job, Job.id == Hit.job_id).where(Job.batch_id != Hit.batch_id)
        )
        assert mismatched == 0
        assert session.scalar(select(func.count(Spend.id)).where(Spend.job_id.is_(None))) == 0
        count, total = session.execute(select(func.count(Spend.id), func.sum(Spend.amount))).one()
        assert count == spend[0] > 20 and abs(float(total) - spend[1]) < 1e-9
        # Digit-1 was killed collecting round 1's first follow-up: that job is the one still out.
        live = session.execute(select(Round.state, Round.follow_up).where(Round.state != "done")).one()
        assert live == ("published", 1)
        out = [job for job in jobs.values() if job.state != JobState.REVIEWED]
        assert [(job.batch_id, job.state, job.kind, job.sequence) for job in out] == [
            ("digits-demo:digit-1:r1:f1", JobState.PUBLISHED, JobKind.FOLLOW_UP, 1)
        ]
        assert jobs["digits-demo:digit-0:r2"].kind == JobKind.ROUND
        assert jobs["digits-demo:digit-0:r2:f3"].sequence == 3
        assert jobs["digits-demo:digit-0:r2:f1"].assignments_per_hit == 1
        # The project gets an identity for batches to come; the batches it published keep their ids.
        identity = session.get(Meta, "project_id")
        assert identity is not None and len(identity.value) == 8
    assert store.project_key("digits-demo") == f"digits-demo#{identity.value}"
    with store.session() as session:
        # The labels are the first events of their history, and still the current labels.
        assert session.scalar(select(func.count(LabelEvent.id))) == len(labels)
        current = session.execute(
            select(Label.item_id, Label.category_id, Label.label, Label.source, Label.round_id).order_by(
                Label.item_id, Label.category_id
            )
        ).all()
        assert [tuple(row) for row in current] == labels
        item, category, label, source, round_id = labels[0]
        found = current_label(session, item, category)
        assert found is not None and (found.label, found.source, found.round_id) == (label, source, round_id)
        # A job outside any round (an audit, later) may own HITs now, and old HITs keep their items.
        session.add(Hit(round_id=None, job_id=None, batch_id="audit", hit_key="h0", assignments_requested=1))
        session.flush()
        assert session.scalar(select(func.count()).select_from(HitItemRow)) == hit_items > 900
        orphans = session.scalar(
            select(func.count())
            .select_from(HitItemRow)
            .outerjoin(Hit, Hit.id == HitItemRow.hit_id)
            .where(Hit.id.is_(None))
        )
        assert orphans == 0
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        schema = db.execute("SELECT sql FROM sqlite_master WHERE name = 'hit_items'").fetchone()[0]
        assert "REFERENCES hits" in schema and "hits_v3" not in schema
    db.close()
    # Opening again changes nothing.
    again = Store(f"sqlite:///{path}")
    with again.session() as session:
        assert session.scalar(select(func.count(Job.id))) == len(batches)
    again.close()


def test_items_gain_the_file_size_and_mtime_that_let_embedding_skip_hashing(tmp_path: Path) -> None:
    path = v3_store(tmp_path)
    with sqlite3.connect(path) as db:
        items = db.execute("SELECT id, sha256 FROM items ORDER BY id").fetchall()
    db.close()
    store = Store(f"sqlite:///{path}")
    with store.session() as session:
        rows = session.execute(select(Item.id, Item.sha256, Item.file_size, Item.file_mtime_ns).order_by(Item.id)).all()
        assert [(row.id, row.sha256) for row in rows] == items and len(items) == 300
        assert {(row.file_size, row.file_mtime_ns) for row in rows} == {(None, None)}  # they get hashed, as before
        session.execute(update(Item).where(Item.id == items[0][0]).values(file_size=2**40, file_mtime_ns=2**62))
    store.close()
    again = Store(f"sqlite:///{path}")  # nothing left to migrate, and 64-bit values survive
    with again.session() as session:
        assert session.execute(select(Item.file_size, Item.file_mtime_ns).where(Item.id == items[0][0])).one() == (
            2**40,
            2**62,
        )
    again.close()
