"""The runner moves every category side by side: HITs of all categories out at once, one poll for
all of them, and the virtual time of ten categories close to that of the slowest one alone."""

from __future__ import annotations

from pathlib import Path

from lsun_crowd_mock import SimulatedCrowd
from sqlalchemy import func, select

from lsun_crowd.project import Project
from lsun_crowd.schema import Category, Hit, Job, JobState, Meta, Round, Spend
from lsun_crowd.store import Store

from .conftest import make_digits_project

# A reduced form of benchmarks/side_by_side.py: a smaller pool and a lighter head, same comparison.
SMALL = {"limit": 200, "sample": 70, "overrides": {"model": {"epochs": 40, "hidden_units": 32}}}


def open_categories(store: Store) -> list[str]:
    """Categories with HITs open on the platform right now."""
    with store.session() as session:
        return list(
            session.scalars(
                select(Category.name)
                .join(Job, Job.category_id == Category.id)
                .join(Hit, Hit.job_id == Job.id)
                .where(Job.state == JobState.PUBLISHED, Hit.state == "open")
                .distinct()
                .order_by(Category.name)
            )
        )


def run_to_the_end(directory: Path) -> tuple[float, list[str]]:
    """Virtual seconds until every category is finished, and the outcomes."""
    project = Project.open(directory)
    crowd = project.crowd()
    assert isinstance(crowd, SimulatedCrowd)
    outcomes = project.cascade(crowd).run()
    project.close()
    return crowd.clock_seconds(), [outcome.reason for outcome in outcomes]


def test_ten_categories_take_about_as_long_as_the_slowest_alone(tmp_path: Path) -> None:
    together = tmp_path / "together"
    make_digits_project(together, digits=range(10), **SMALL)  # type: ignore[arg-type]
    project = Project.open(together)
    crowd = project.crowd()
    assert isinstance(crowd, SimulatedCrowd)
    runner = project.cascade(crowd).runner()

    # One pass publishes every category's first batch: all ten are out at once.
    outcomes = runner.run(once=True)
    assert {outcome.reason for outcome in outcomes} == {"running"}
    assert open_categories(project.store) == [f"digit-{digit}" for digit in range(10)]
    while runner.outcomes.keys() != {f"digit-{digit}" for digit in range(10)}:
        runner.run_pass()
    with project.store.session() as session:
        assert session.scalar(select(func.count(Round.id)).where(Round.state != "done")) == 0
        spent = session.scalar(select(func.sum(Spend.amount)))
    assert {outcome.reason for outcome in runner.outcomes.values()} == {"resolved"}
    both = crowd.clock_seconds()
    project.close()

    alone = []
    for digit in range(10):
        directory = tmp_path / f"alone-{digit}"
        make_digits_project(directory, digits=range(digit, digit + 1), **SMALL)  # type: ignore[arg-type]
        seconds, reasons = run_to_the_end(directory)
        assert reasons == ["resolved"]
        alone.append(seconds)
    print(
        f"virtual hours: together {both / 3600:.1f}, slowest alone {max(alone) / 3600:.1f}, sum {sum(alone) / 3600:.1f}"
    )
    assert both <= 1.5 * max(alone)
    assert both < 0.3 * sum(alone)  # one after the other, it was close to the sum
    assert spent is not None and spent > 0


def test_categories_side_by_side_never_overspend_the_budget_together(tmp_path: Path) -> None:
    """A budget that pays for one category's first batch (0.42 USD: 7 HITs × 2 assignments ×
    (0.02 + 0.01 fee)) and not two: the first category publishes, the second stops unpublished,
    and nothing is spent beyond the budget."""
    directory = tmp_path / "p"
    make_digits_project(directory, limit=200, digits=range(2), sample=60, overrides={"cascade": {"budget": 0.5}})
    project = Project.open(directory)
    outcomes = {outcome.category: outcome for outcome in project.cascade(project.crowd()).run()}
    with project.store.session() as session:
        spent = session.scalar(select(func.sum(Spend.amount))) or 0
        by_category = dict(
            session.execute(
                select(Category.name, func.count(Job.id))
                .join(Job, Job.category_id == Category.id)
                .where(Job.state != JobState.STOPPED)
                .group_by(Category.name)
            ).all()
        )
        notes = session.scalar(select(Job.notes).join(Category).where(Category.name == "digit-1"))
    assert 0.42 <= spent <= 0.5
    assert outcomes["digit-1"].reason == "budget" and outcomes["digit-1"].rounds == 0
    assert "digit-1" not in by_category and by_category["digit-0"] >= 1
    assert notes == "budget: round 1 would cost 0.42, 0.08 of 0.5 left"
    project.close()


def test_run_once_makes_one_pass_and_a_later_run_finishes(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    make_digits_project(directory, limit=200, digits=range(2), sample=60, overrides=SMALL["overrides"])  # type: ignore[arg-type]
    project = Project.open(directory)
    first = project.cascade(project.crowd()).run(once=True)
    assert [outcome.reason for outcome in first] == ["running", "running"]
    assert open_categories(project.store) == ["digit-0", "digit-1"]  # both published in the one pass
    with project.store.session() as session:
        polls = session.get(Meta, "polls")
        states = set(session.scalars(select(Round.state)))
    assert polls is not None and polls.value == "1"  # one pass: one poll of the platform
    assert states == {"published"}  # nothing waits for the crowd's next answers in a pass
    rest = project.cascade(project.crowd()).run()
    assert [outcome.reason for outcome in rest] == ["resolved", "resolved"]
    project.close()


def test_a_job_advances_on_its_own_without_waiting(tmp_path: Path) -> None:
    """advance_job with collect: publish, then store what has arrived poll by poll, then review;
    each call returns at once, and says whether anything moved."""
    from lsun_crowd.context import RoundRef
    from lsun_crowd.jobs import advance_job
    from lsun_crowd.rounds import current_job, latest_round, sample_round

    directory = tmp_path / "p"
    make_digits_project(directory, limit=200, digits=range(1), sample=30)
    project = Project.open(directory)
    context = project.cascade(project.crowd()).context
    with project.store.session() as session:
        category = session.scalars(select(Category.id)).one()
    sample_round(context, "digit-0", category, 1)
    ref = lambda: current_job(context, RoundRef("digit-0", category, latest_round(context, category)))  # noqa: E731
    assert advance_job(context, ref()) and ref().state == JobState.PUBLISHED  # checked and published
    assert not advance_job(context, ref())  # without collect it waits for the runner's poll
    calls = 0
    while ref().state != JobState.REVIEWED:
        advance_job(context, ref(), collect=True)
        calls += 1
        assert calls < 50
    with project.store.session() as session:
        assert session.scalar(select(func.count()).select_from(Hit).where(Hit.state == "open")) == 0
        assert session.scalar(select(Round.state)) == "reviewed"
    project.close()
