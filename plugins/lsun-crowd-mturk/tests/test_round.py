"""A whole cascade round on Mechanical Turk, through the real boto3 client and botocore's Stubber:
HIT type, HITs, assignments, approvals and rejections, a block, expiry, a bonus; votes in the store."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from fake_turk import FakeTurk
from lsun_crowd_mturk import Api, MTurkCrowd, MTurkSettings
from sqlalchemy import func, select

from lsun_crowd.api import spent
from lsun_crowd.crowd import NO, YES
from lsun_crowd.loop import Cascade
from lsun_crowd.project import Project
from lsun_crowd.schema import AssignmentRow, Hit, Label, Round, Vote, Worker
from lsun_crowd.testing import digits_project

HONEST = ("A1HONESTWORKER", "A2HONESTWORKER")
ADVERSARY = "A3ADVERSARYWORKER"


def make_project(directory: Path, budget: str = "500", collect_timeout: float = 0.3) -> np.ndarray:
    """200 digits, category digit-0; fixed redundancy (three votes, calibration images too), so that
    a round is one batch."""
    directory.mkdir(parents=True)
    crowd = {"votes_per_item": 3, "max_votes_per_item": 3, "collect_timeout_seconds": collect_timeout}
    return digits_project(
        directory,
        limit=200,
        digits=range(1),
        seed=0,
        sample_per_round=60,
        overrides={"crowd": crowd, "cascade": {"budget": Decimal(budget), "calibration_max_votes": 3}},
    )


def settings_for(directory: Path, **extra: object) -> MTurkSettings:
    return MTurkSettings(
        image_root=str((directory / "images").resolve()),
        image_url_prefix="https://images.example.org/digits",
        **extra,  # type: ignore[arg-type]
    )


class Workers:
    """Two honest workers and an adversary take every open HIT between polls; one HIT gets a
    single worker and is left to expire."""

    def __init__(self, turk: FakeTurk, targets: np.ndarray, starve: int = 1) -> None:
        self.turk = turk
        self.targets = targets
        self.starve = starve

    def answer(self, worker: str, url: str) -> str:
        shows = self.targets[int(PurePosixPath(url).stem)] == 0
        right = shows if worker != ADVERSARY else not shows
        return YES if right else NO

    def __call__(self, _seconds: float) -> None:
        hit_ids = sorted(self.turk.hits)
        for number, hit_id in enumerate(hit_ids):
            for worker in (ADVERSARY, *HONEST):
                self.turk.work(hit_id, worker, self.answer)
                if number < self.starve:
                    break


def cascade(project: Project, crowd: MTurkCrowd, workers: Workers) -> Cascade:
    return Cascade(project.config, project.store, crowd, lambda: project.embedding_cache(), sleep=workers)


def crowd_on(turk: FakeTurk, settings: MTurkSettings) -> MTurkCrowd:
    return MTurkCrowd(Api(turk.client, settings, sleep=lambda _: None), settings, "digits-demo")


def test_a_whole_round_on_mechanical_turk(tmp_path: Path) -> None:
    directory = tmp_path / "project"
    targets = make_project(directory)
    turk = FakeTurk()
    crowd = crowd_on(turk, settings_for(directory))
    project = Project.open(directory)
    outcome = cascade(project, crowd, Workers(turk, targets)).run(max_rounds=1)[0]
    assert outcome.rounds == 1

    hits = list(turk.hits.values())
    assert len(hits) == 7 == turk.count("CreateHITWithHITType")  # 60 images, 9 and a gold image a HIT
    key = project.store.project_key("digits-demo")  # the project's name and random identity
    assert {hit["RequesterAnnotation"].split("|")[0] for hit in hits} == {f"{key}:digit-0:r1"}
    assert turk.count("ListHITs") == 0  # publishing never read the account
    hit_type = turk.hit_types[hits[0]["HITTypeId"]]
    assert hit_type["Reward"] == "0.02" and hit_type["Title"] == "Which of these images show a digit-0?"
    requirement_types = [r["QualificationTypeId"] for r in hit_type["QualificationRequirements"]]
    assert requirement_types[:3] == ["000000000000000000L0", "00000000000000000040", "00000000000000000071"]
    # The starved HIT was expired through the adapter once collection timed out.
    expired = [params["HITId"] for name, params in turk.calls if name == "UpdateExpirationForHIT"]
    assert expired == [sorted(turk.hits)[0]]

    statuses = {a["WorkerId"]: set() for a in turk.assignments.values()}
    for a in turk.assignments.values():
        statuses[a["WorkerId"]].add(a["AssignmentStatus"])
    assert statuses[ADVERSARY] == {"Rejected"}  # blocked on gold, and their pending work rejected
    assert statuses[HONEST[0]] == statuses[HONEST[1]] == {"Approved"}
    block_type = crowd.qualifications.block_type()
    assert turk.worker_scores[(block_type, ADVERSARY)] == 1  # the soft block: our qualification
    assert all((block_type, worker) not in turk.worker_scores for worker in HONEST)

    with project.store.session() as session:
        assert session.scalar(select(func.count(Hit.id)).where(Hit.platform_hit_id.is_not(None))) == 7
        assert session.scalar(select(func.count(AssignmentRow.id))) == len(turk.assignments) == 1 + 6 * 3
        # One vote per image shown: the starved HIT's one worker saw 10, five full HITs 3 × 10 each,
        # and the last HIT (6 images and a gold one) 3 × 7.
        shown = sum(len(turk.items[a["HITId"]]) for a in turk.assignments.values())
        assert session.scalar(select(func.count(Vote.id))) == shown == 10 + 5 * 3 * 10 + 3 * 7
        assert session.scalar(select(Worker.blocked).where(Worker.platform_worker_id == ADVERSARY))
        assert session.scalar(select(Round.state)) == "done"
        labeled = session.scalar(select(func.count(Label.id)).where(Label.source == "human"))
    assert labeled is not None and labeled >= 50  # the honest pair agrees on nearly every image

    # A bonus, paid once however often it is asked for.
    approved = next(a for a in turk.assignments.values() if a["WorkerId"] == HONEST[0])
    for _ in range(2):
        crowd.pay_bonus(HONEST[0], approved["AssignmentId"], Decimal("0.10"), "careful work", "bonus-r1-A1")
    assert list(turk.bonuses.values()) == [Decimal("0.10")]
    assert turk.ledger.spent("bonus", "bonus-fee") == Decimal("0.12")  # MTurk's 20%, at least a cent
    assert turk.ledger.spent("reward", "fee") == spent(project) == Decimal("0.63")  # the store, to the cent
    assert turk.balance == Decimal("10000.00") - Decimal("0.63") - Decimal("0.12")
    project.close()


class Crash(Exception):
    pass


def test_a_crash_after_creating_hits_never_posts_them_twice(tmp_path: Path) -> None:
    directory = tmp_path / "project"
    targets = make_project(directory)
    turk = FakeTurk()
    settings = settings_for(directory)
    crashing = crowd_on(turk, settings)
    real_publish = crashing.publish

    def publish_then_crash(batch):  # type: ignore[no-untyped-def]
        real_publish(batch)  # every CreateHITWithHITType went through ...
        raise Crash  # ... and the process died before the store committed their ids

    crashing.publish = publish_then_crash  # type: ignore[method-assign]
    project = Project.open(directory)
    with pytest.raises(Crash):
        cascade(project, crashing, Workers(turk, targets)).run(max_rounds=1)
    with project.store.session() as session:
        assert session.scalar(select(Round.state)) == "publishing"
        assert session.scalar(select(func.count(Hit.id)).where(Hit.platform_hit_id.is_not(None))) == 0
    project.close()

    resumed = Project.open(directory)
    cascade(resumed, crowd_on(turk, settings), Workers(turk, targets)).run(max_rounds=1)
    # The resumed publish sent every HIT's token again: MTurk refused the 7 it had, nothing twice.
    assert len(turk.hits) == 7 and turk.count("CreateHITWithHITType") == 14
    with resumed.store.session() as session:
        stored = set(session.scalars(select(Hit.platform_hit_id)))
    assert stored == set(turk.hits)
    resumed.close()


def test_a_lost_create_response_is_resolved_to_the_existing_hit(tmp_path: Path) -> None:
    directory = tmp_path / "project"
    targets = make_project(directory)
    turk = FakeTurk()
    turk.lose_response_of.add("CreateHITWithHITType")  # created, but the answer never arrives
    project = Project.open(directory)
    cascade(project, crowd_on(turk, settings_for(directory)), Workers(turk, targets)).run(max_rounds=1)
    # The retry carried the same UniqueRequestToken; MTurk said HitAlreadyExists, and the adapter
    # found the HIT by its annotation instead of posting another.
    assert len(turk.hits) == 7
    assert turk.count("CreateHITWithHITType") == 8
    with project.store.session() as session:
        assert set(session.scalars(select(Hit.platform_hit_id))) == set(turk.hits)
    project.close()


@pytest.mark.parametrize(
    ("budget", "balance", "reason"),
    [("0.5", Decimal("10000.00"), "budget"), ("500", Decimal("0.50"), "balance")],
    ids=["budget", "balance"],
)
def test_budget_and_balance_each_stop_a_publish_that_would_overspend(
    tmp_path: Path, budget: str, balance: Decimal, reason: str
) -> None:
    directory = tmp_path / "project"
    targets = make_project(directory, budget)  # the round costs 0.63 USD: 21 assignments, fees included
    turk = FakeTurk(balance=balance)
    project = Project.open(directory)
    outcome = cascade(project, crowd_on(turk, settings_for(directory)), Workers(turk, targets)).run(max_rounds=1)[0]
    assert outcome.reason == reason
    assert turk.count("CreateHITWithHITType") == 0 and not turk.hits
    with project.store.session() as session:
        assert session.scalar(select(Round.state)) == "stopped"
        assert session.scalar(select(func.count(Hit.id)).where(Hit.platform_hit_id.is_not(None))) == 0
    project.close()
