"""The runner moves every category side by side: HITs of all categories out at once, one poll for
all of them, and the virtual time of ten categories close to that of the slowest one alone."""

from __future__ import annotations

from pathlib import Path

from lsun_crowd_mock import SimulatedCrowd
from sqlalchemy import func, select

from lsun_crowd.project import Project
from lsun_crowd.schema import Category, Hit, Job, JobState, Round, Spend
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
