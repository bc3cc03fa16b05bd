"""Recovery on Mechanical Turk, end to end over real HTTP (turk_server): a crash mid-publish and
what a user does after it, two projects of one name on one account, what cleanup may touch, a
run that stops for money, and how many requests a publish makes."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from fake_turk import FakeTurk
from lsun_crowd_mturk import Api, MTurkCrowd, MTurkSettings, make_client
from test_round import Crash, Workers, cascade, make_project, settings_for
from turk_server import TurkServer, point_at
from typer.testing import CliRunner

from lsun_crowd.api import spent
from lsun_crowd.cli import app
from lsun_crowd.crowd import HitBatch
from lsun_crowd.plugins import Plugins
from lsun_crowd.project import Project
from lsun_crowd.schema import Hit, Vote
from lsun_crowd.testing import REMOVE, update_project

runner = CliRunner(env={"COLUMNS": "200"})
if not any(group.name == "mturk" for group in app.registered_groups):
    Plugins().add_commands(app)  # what `lsun-crowd` does on start, through the entry point


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[TurkServer]:
    with TurkServer() as running:
        point_at(running, monkeypatch)
        yield running


def crowd_over_http(settings: MTurkSettings, project: str = "digits-demo") -> MTurkCrowd:
    return MTurkCrowd(Api(make_client(settings), settings, sleep=lambda _: None), settings, project)


def mturk_settings(directory: Path) -> None:
    """The project's own settings name the adapter, as a user's would, for the CLI's commands."""
    settings = settings_for(directory)
    update_project(
        directory,
        {
            "crowd": {
                "adapter": "mturk",
                "settings": {
                    "seed": REMOVE,
                    "truth_file": REMOVE,
                    "image_root": settings.image_root,
                    "image_url_prefix": settings.image_url_prefix,
                },
            }
        },
    )


def crash_mid_publish(directory: Path, server: TurkServer, targets: object) -> None:
    """Run until the first batch's HITs exist on MTurk, and die before the store records them."""
    crowd = crowd_over_http(settings_for(directory))
    real_publish = crowd.publish

    def publish_then_crash(batch: HitBatch) -> object:
        real_publish(batch)
        raise Crash

    crowd.publish = publish_then_crash  # type: ignore[method-assign]
    project = Project.open(directory)
    with pytest.raises(Crash):
        cascade(project, crowd, Workers(server.turk, targets, starve=0)).run(max_rounds=1)  # type: ignore[arg-type]
    project.close()


def finish(directory: Path, server: TurkServer, targets: object) -> Project:
    project = Project.open(directory)
    crowd = crowd_over_http(settings_for(directory))
    outcome = cascade(project, crowd, Workers(server.turk, targets, starve=0)).run(max_rounds=1)[0]  # type: ignore[arg-type]
    assert outcome.rounds == 1
    return project


def votes_per_image(project: Project) -> dict[int, int]:
    with project.store.session() as session:
        rows = session.query(Vote.item_id).filter(Vote.is_gold.is_(False)).all()
    counts: dict[int, int] = {}
    for (item,) in rows:
        counts[item] = counts.get(item, 0) + 1
    return counts


def test_hits_deleted_after_a_crash_mid_publish_are_published_again_without_double_spend(
    tmp_path: Path, server: TurkServer
) -> None:
    """Defect 1: MTurk remembers a request token for 24 hours after its HIT is deleted."""
    directory = tmp_path / "project"
    targets = make_project(directory, collect_timeout=30.0)
    crash_mid_publish(directory, server, targets)
    created = set(server.turk.hits)
    assert len(created) == 7
    crowd = crowd_over_http(settings_for(directory))
    for hit_id in created:  # what an earlier cleanup --delete, or the requester's web page, did
        crowd.expire([hit_id])
        assert crowd.delete(hit_id)
    project = finish(directory, server, targets)
    with project.store.session() as session:
        stored = {row.platform_hit_id for row in session.query(Hit.platform_hit_id)}
    assert len(stored) == 7 and not stored & created  # published again, under fresh tokens
    assert server.turk.ledger.spent() == spent(project) == Decimal("0.63")  # the deleted ones refunded
    assert set(votes_per_image(project).values()) == {3}
    project.close()


def test_two_projects_of_one_name_never_share_a_hit(tmp_path: Path, server: TurkServer) -> None:
    """Defect 2: a project re-created under the same name used to adopt the old one's HITs."""
    first_dir, second_dir = tmp_path / "a" / "digits", tmp_path / "b" / "digits"
    first_targets = make_project(first_dir, collect_timeout=30.0)
    crash_mid_publish(first_dir, server, first_targets)  # the old project's HITs are out, unrecorded
    old = set(server.turk.hits)
    second_targets = make_project(second_dir, collect_timeout=30.0)  # same name, same settings
    second = finish(second_dir, server, second_targets)
    with second.store.session() as session:
        adopted = {row.platform_hit_id for row in session.query(Hit.platform_hit_id)} & old
        keys = {row.batch_id for row in session.query(Hit.batch_id)}
    assert adopted == set() and len(server.turk.hits) == 14
    assert all(key.startswith(second.store.project_key("digits-demo")) for key in keys)
    second.close()
    first = finish(first_dir, server, first_targets)  # the old project resumes onto its own HITs
    with first.store.session() as session:
        assert {row.platform_hit_id for row in session.query(Hit.platform_hit_id)} == old
    assert server.turk.ledger.spent() == spent(first) + spent(second) == Decimal("1.26")
    first.close()


def test_cleanup_leaves_a_finished_run_and_a_crashed_publish_alone(tmp_path: Path, server: TurkServer) -> None:
    """Defect 3: cleanup expired every HIT not open in the store, a resumed run's included."""
    directory = tmp_path / "project"
    targets = make_project(directory, collect_timeout=30.0)
    mturk_settings(directory)
    crash_mid_publish(directory, server, targets)
    result = runner.invoke(app, ["mturk", "cleanup", "--project", str(directory), "--delete"])
    assert result.exit_code == 0, result.output
    assert "no HITs of digits-demo#" in result.output  # the crashed job's HITs belong to it
    assert {hit["HITStatus"] for hit in server.turk.hits.values()} == {"Assignable"}
    project = finish(directory, server, targets)  # adopts them: every image gets its first votes
    assert set(votes_per_image(project).values()) == {3} and len(server.turk.hits) == 7
    project.close()
    result = runner.invoke(app, ["mturk", "cleanup", "--project", str(directory)])
    assert result.exit_code == 0 and "the store accounts for every one" in result.output
    assert server.turk.count("UpdateExpirationForHIT") == 0


def test_a_run_stopped_for_money_exits_3_once(tmp_path: Path, server: TurkServer) -> None:
    """Defect 8: a run that stops for money exited 0 and printed its stop line twice."""
    directory = tmp_path / "project"
    make_project(directory, budget="0.30")
    mturk_settings(directory)
    result = runner.invoke(app, ["run", "--project", str(directory)])
    assert result.exit_code == 3, result.output
    stops = [line for line in result.output.splitlines() if "budget" in line]
    assert len(stops) == 1 and stops[0].startswith("digit-0: stopped after 0 round(s), budget: round 1 would cost")
    assert server.turk.count("CreateHITWithHITType") == 0


def test_publishing_reads_nothing_of_the_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 9: every publish paged through the whole account, other projects' HITs included."""
    crowded = FakeTurk()
    with TurkServer(crowded) as server:
        point_at(server, monkeypatch)
        other = crowd_over_http(MTurkSettings(image_root="/img", image_url_prefix="https://i.example.org"), "other")
        from test_client import batch

        for number in range(3):  # another project's HITs on the same account (of images 0 to 182)
            other.publish(batch(f"other#00000000:cat:r{number}", hits=19))
        before = {name: server.turk.count(name) for name in ("ListHITs", "CreateHITWithHITType")}
        directory = tmp_path / "project"
        targets = make_project(directory, collect_timeout=30.0)
        project = finish(directory, server, targets)
        assert server.turk.count("ListHITs") == before["ListHITs"]  # none at all
        assert server.turk.count("CreateHITWithHITType") - before["CreateHITWithHITType"] == 7
        # Polls read the HITs' counters and list a HIT's assignments only when its count moved:
        # once for each of the 7 HITs here, however many polls there were.
        assert server.turk.count("ListAssignmentsForHIT") == 7
        project.close()
