"""The audit: its intervals, its allocation, its sample stored before publishing and reused, fresh
workers only, figures in the store, bad input, and coverage over seeded audits."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from lsun_crowd.audit.run import FOLLOW_UP_VOTES, run_audit
from lsun_crowd.audit.sample import allocate
from lsun_crowd.audit.stats import Stratum, Sums, clopper_pearson, exact_mean, ppi_mean_interval
from lsun_crowd.cli import app
from lsun_crowd.project import Project
from lsun_crowd.schema import (
    AssignmentRow,
    Audit,
    AuditFollowUp,
    AuditItem,
    AuditResult,
    Hit,
    HitItemRow,
    Job,
    JobKind,
    JobState,
    Label,
    Vote,
    Worker,
)
from lsun_crowd.testing import write_project

from .conftest import load_benchmark


def _benchmark():  # type: ignore[no-untyped-def]
    return load_benchmark("audit_coverage")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished project's final labels (written directly; calibrated confidences) and its truth."""
    directory = tmp_path_factory.mktemp("finished")
    _benchmark().synthetic_labeled_project(directory, items=600)
    return directory


def copy_of(finished: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("lsun-crowd.db", "lsun-crowd.toml", "truth.csv"):
        shutil.copy2(finished / name, target / name)
    return target


def test_clopper_pearson_matches_known_values() -> None:
    assert clopper_pearson(0, 10, 0.05) == pytest.approx((0.0, 0.30850), abs=1e-5)
    assert clopper_pearson(10, 10, 0.05) == pytest.approx((0.69150, 1.0), abs=1e-5)
    assert clopper_pearson(5, 10, 0.05) == pytest.approx((0.18709, 0.81291), abs=1e-5)
    assert clopper_pearson(0, 0, 0.05) == (0.0, 1.0)


def test_strata_combine_by_size_with_bonferroni_and_unresolved_counted_against_each_bound() -> None:
    big = Stratum(900, correct=18, wrong=2, unresolved=0, labeled=Sums(), pool=Sums())
    small = Stratum(100, correct=9, wrong=0, unresolved=1, labeled=Sums(), pool=Sums())
    combined = exact_mean([big, small], 0.05)
    big_low, big_high = clopper_pearson(18, 20, 0.025)
    small_low, _ = clopper_pearson(9, 10, 0.025)  # the unresolved label counted wrong
    _, small_high = clopper_pearson(10, 10, 0.025)  # and right
    assert combined.low == pytest.approx(0.9 * big_low + 0.1 * small_low)
    assert combined.high == pytest.approx(0.9 * big_high + 0.1 * small_high)
    assert combined.estimate == pytest.approx(0.9 * 18 / 20 + 0.1 * 1.0)


def test_ppi_from_streamed_sums_equals_ppi_py() -> None:
    ppi_py = pytest.importorskip("ppi_py")
    generator = np.random.default_rng(3)
    for n, pool_size in ((30, 400), (80, 2000), (12, 50)):
        f_pool = generator.beta(8, 1, pool_size)
        sample = generator.choice(pool_size, n, replace=False)
        y = (generator.random(n) < f_pool[sample]).astype(float)
        labeled = Sums()
        for value, score in zip(y, f_pool[sample], strict=True):
            labeled = labeled.add(float(value), float(score))
        pool = Sums()
        for start in range(0, pool_size, 64):  # streamed in chunks, never held
            chunk = f_pool[start : start + 64]
            pool = Sums(pool.count + len(chunk), f=pool.f + float(chunk.sum()), ff=pool.ff + float((chunk**2).sum()))
        ours = ppi_mean_interval(labeled, pool, 0.05, guard=False)
        low, high = ppi_py.ppi_mean_ci(y, f_pool[sample], f_pool, alpha=0.05)
        assert ours is not None
        assert (ours.low, ours.high) == pytest.approx((float(low[0]), float(high[0])), abs=1e-9)


def test_allocation_is_proportional_above_an_even_floor_and_capped() -> None:
    sizes = [5000, 300, 0, 4, 700]
    taken = allocate(sizes, 200)
    assert sum(taken) == 200 and taken[2] == 0 and taken[3] == 4  # capped at its size
    floor = 200 // (2 * 4)
    assert all(share >= min(size, floor) for share, size in zip(taken, sizes, strict=True))
    assert taken[0] > taken[4] > taken[1]  # proportional above the floor
    assert allocate(sizes, 10_000) == sizes  # more than there is: everything


def _earlier_votes(project: Project, workers: list[str]) -> None:
    """Votes of a past job by these workers on every labeled image of the project."""
    with project.store.session() as session:
        # One vote per image (in one of its categories): having seen it at all keeps a worker away.
        items = session.execute(select(Label.item_id, func.min(Label.category_id)).group_by(Label.item_id)).all()
        job = Job(category_id=items[0][1], kind=JobKind.ROUND, batch_id="past", state=JobState.REVIEWED)
        job.assignments_per_hit = len(workers)
        session.add(job)
        session.flush()
        hit = Hit(job_id=job.id, batch_id="past", hit_key="h0", assignments_requested=len(workers))
        session.add(hit)
        session.flush()
        for worker in workers:
            row = Worker(platform_worker_id=worker)
            session.add(row)
            session.flush()
            assignment = AssignmentRow(
                platform_assignment_id=f"past-{worker}",
                hit_id=hit.id,
                worker_id=row.id,
                status="approved",
                accepted_at=0.0,
                submitted_at=1.0,
            )
            session.add(assignment)
            session.flush()
            session.add_all(
                Vote(assignment_id=assignment.id, item_id=item, category_id=category, worker_id=row.id, answer=1)
                for item, category in items
            )


def test_audit_stores_its_sample_first_keeps_earlier_voters_away_and_resumes(finished: Path, tmp_path: Path) -> None:
    directory = copy_of(finished, tmp_path / "project")
    project = Project.open(directory)
    seen = [f"SIMW{n:05d}" for n in range(20)]
    _earlier_votes(project, seen)
    crowd = project.crowd()

    def killed(batch: object) -> list[object]:
        raise KeyboardInterrupt  # the process dies while publishing

    original = crowd.publish
    crowd.publish = killed  # type: ignore[method-assign,assignment]
    with pytest.raises(KeyboardInterrupt):
        run_audit(project.config, project.store, crowd, sample=120, seed=4, sleep=lambda _: None)
    with project.store.session() as session:
        drawn = set(session.execute(select(AuditItem.item_id, AuditItem.category_id)).all())
        assert len(drawn) == 120 and session.scalar(select(func.count(Audit.id))) == 1
    crowd.publish = original  # type: ignore[method-assign]
    outcome = run_audit(project.config, project.store, crowd, sample=120, seed=4, sleep=lambda _: None)
    assert outcome.resumed and outcome.sample == 120
    with project.store.session() as session:
        assert set(session.execute(select(AuditItem.item_id, AuditItem.category_id)).all()) == drawn
        audit_voters = set(
            session.scalars(
                select(Worker.platform_worker_id)
                .join(Vote, Vote.worker_id == Worker.id)
                .join(AssignmentRow, AssignmentRow.id == Vote.assignment_id)
                .join(Hit, Hit.id == AssignmentRow.hit_id)
                .join(Job, Job.id == Hit.job_id)
                .where(Job.kind == JobKind.AUDIT, Vote.is_gold.is_(False))
            )
        )
        rows = session.scalars(select(AuditResult)).all()
    assert audit_voters and audit_voters.isdisjoint(seen), "a worker who voted on an image audited it"
    overall = {(row.stratum, row.metric) for row in rows if row.category_id is None}
    assert {("all", "precision"), ("all", "npv"), ("all", "recall"), ("model-positive", "precision")} <= overall
    for row in rows:
        assert 0 <= row.exact_low <= row.exact_high <= 1 and row.n > 0
        assert row.ppi_low is not None and row.ppi_high is not None and row.ppi_low <= row.ppi_high
    again = run_audit(project.config, project.store, crowd, sample=120, seed=4, sleep=lambda _: None)
    assert [f.exact for f in again.figures] == [f.exact for f in outcome.figures]  # stored, not redone
    project.close()


def test_images_the_votes_leave_unsettled_get_more_votes_from_fresh_workers_up_to_the_cap(
    finished: Path, tmp_path: Path
) -> None:
    # Five votes each; on this pool 12 of 200 images were left unsettled that way, counted neither
    # right nor wrong. Two more votes at a time, up to 9, settle most of them.
    directory = copy_of(finished, tmp_path / "project")
    project = Project.open(directory)
    outcome = run_audit(project.config, project.store, project.crowd(), sample=200, seed=4, sleep=lambda _: None)
    with project.store.session() as session:
        follow_ups = set(session.scalars(select(AuditFollowUp.job_id)))
        jobs = session.scalars(select(Job).where(Job.id.in_(follow_ups))).all()
        asked = {  # votes asked for each audited (image, category)
            (item, category): int(total)
            for item, category, total in session.execute(
                select(HitItemRow.item_id, Job.category_id, func.sum(Hit.assignments_requested))
                .join(Hit, Hit.id == HitItemRow.hit_id)
                .join(Job, Job.id == Hit.job_id)
                .where(Job.kind == JobKind.AUDIT, HitItemRow.is_gold.is_(False))
                .group_by(HitItemRow.item_id, Job.category_id)
            )
        }
        labels = session.execute(select(AuditItem.item_id, AuditItem.category_id, AuditItem.audit_label)).all()
        settled_later = sum(label is not None and asked[(item, category)] > 5 for item, category, label in labels)
        unresolved = [(item, category) for item, category, label in labels if label is None]
        # A follow-up's voter never answered about that image before (in any job).
        voters = session.execute(
            select(Vote.item_id, Vote.category_id, Vote.worker_id, Hit.job_id)
            .join(AssignmentRow, AssignmentRow.id == Vote.assignment_id)
            .join(Hit, Hit.id == AssignmentRow.hit_id)
            .where(Vote.is_gold.is_(False))
        ).all()
    project.close()
    assert follow_ups and {job.kind for job in jobs} == {JobKind.AUDIT} and {job.state for job in jobs} == {"reviewed"}
    assert all(job.assignments_per_hit == FOLLOW_UP_VOTES for job in jobs)
    assert max(asked.values()) <= 9 and settled_later >= 5
    # What is still unresolved is so at the cap, and there is less of it than the 12 before.
    assert outcome.unresolved == len(unresolved) < 12
    assert all(asked[pair] + FOLLOW_UP_VOTES > 9 for pair in unresolved)
    seen: dict[tuple[int, int, int], set[int]] = {}
    for item, category, worker, job in voters:
        seen.setdefault((item, category, worker), set()).add(job)
    assert all(len(jobs_of) == 1 for jobs_of in seen.values()), "a worker answered twice about an image"


def test_bad_input_is_a_clear_message_and_exit_2(finished: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["audit", "--project", str(finished), "--sample", "0"])
    assert result.exit_code == 2 and "--sample must be at least 1" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    empty = tmp_path / "empty"
    write_project(empty, {"project": {"name": "empty", "categories": ["cat"]}, "crowd": {"adapter": "web"}})
    result = runner.invoke(app, ["audit", "--project", str(empty), "--sample", "10"])
    assert result.exit_code == 2 and "no final labels yet" in result.output
    assert "Traceback" not in result.output


def test_intervals_cover_the_truth_over_seeded_audits(finished: Path) -> None:
    """The benchmark's reduced form: 6 audits of 200 labels (`benchmarks/audit_coverage.py` runs 100)."""
    result = _benchmark().coverage(finished, audits=6, sample=200)
    exact, ppi = result["exact"], result["ppi"]
    assert exact.total == ppi.total >= 6 * 14
    assert exact.coverage >= 0.9 and ppi.coverage >= 0.9
    assert result["ppi_width_paired"] < result["exact_width_paired"]
