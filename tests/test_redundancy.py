"""Adaptive redundancy: uncertain images get follow-up votes, up to the cap, and each round
records the votes it asked for against fixed redundancy at the cap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from lsun_crowd.config import QualityConfig
from lsun_crowd.project import Project
from lsun_crowd.review import human_posterior
from lsun_crowd.schema import AssignmentRow, Hit, HitItemRow, Item, Round, RoundKind, Vote, Worker
from lsun_crowd.status import category_status
from lsun_crowd.store import Store, category_id, insert_ignoring_duplicates

from .conftest import make_digits_project


def votes_per_image(session: object, round_id: int) -> dict[int, int]:
    """Votes requested per pool image of a round, summed over its batches."""
    rows = session.execute(  # type: ignore[attr-defined]
        select(HitItemRow.item_id, func.sum(Hit.assignments_requested))
        .join(Hit, Hit.id == HitItemRow.hit_id)
        .where(Hit.round_id == round_id, HitItemRow.is_gold.is_(False))
        .group_by(HitItemRow.item_id)
    ).all()
    return dict(rows)


def test_uncertain_images_get_follow_up_votes_up_to_the_cap(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    # Calibration images capped like the others here (they may take more: test_guarantee_cascade.py).
    make_digits_project(
        directory, limit=400, digits=range(1), sample=150, overrides={"cascade": {"calibration_max_votes": 5}}
    )
    project = Project.open(directory)
    outcome = project.cascade(project.crowd()).run(max_rounds=1)[0]
    assert outcome.rounds == 1
    crowd = project.config.crowd
    with project.store.session() as session:
        round_ = session.scalars(select(Round).where(Round.kind == RoundKind.SPLIT)).one()
        batches = list(session.scalars(select(Hit.batch_id).where(Hit.round_id == round_.id).distinct()))
        per_image = votes_per_image(session, round_.id)
        follow_up_images = set(
            session.scalars(
                select(HitItemRow.item_id)
                .join(Hit, Hit.id == HitItemRow.hit_id)
                .where(Hit.round_id == round_.id, Hit.batch_id.like("%:f%"), HitItemRow.is_gold.is_(False))
            )
        )
        unpublished = session.scalar(select(func.count(Hit.id)).where(Hit.platform_hit_id.is_(None)))
    assert round_.state == "done"
    assert round_.follow_up >= 1 and len(batches) == round_.follow_up + 1
    key = project.store.project_key("digits-demo")  # the name and the project's own random id
    assert sorted(batches)[0] == f"{key}:digit-0:r1" and sorted(batches)[1] == f"{key}:digit-0:r1:f1"
    assert key.startswith("digits-demo#") and len(key) == len("digits-demo#") + 8
    assert unpublished == 0
    # Every image starts with votes_per_item votes; only some get more, and never past the cap.
    assert len(per_image) == 150
    assert min(per_image.values()) == crowd.votes_per_item
    assert max(per_image.values()) <= crowd.max_votes_per_item
    assert 0 < len(follow_up_images) < 150
    assert {item for item, votes in per_image.items() if votes > crowd.votes_per_item} == follow_up_images
    # The saving is recorded: votes asked against fixed redundancy at the cap.
    assert round_.votes_requested == sum(per_image.values())
    assert round_.votes_fixed == 150 * crowd.max_votes_per_item
    assert round_.votes_requested < 0.8 * round_.votes_fixed
    (status,) = category_status(project.store, ["digit-0"])
    with project.store.session() as session:
        saved = sum(
            fixed - requested
            for fixed, requested in session.execute(select(Round.votes_fixed, Round.votes_requested)).all()
            if fixed is not None and requested is not None
        )
    # Every round's saving, the certification round's included.
    assert status.votes_saved == saved >= round_.votes_fixed - round_.votes_requested


def test_fixed_redundancy_asks_once(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    make_digits_project(
        directory,
        limit=400,
        digits=range(1),
        sample=150,
        # Calibration images on fixed redundancy too (by default they may take more votes).
        overrides={"crowd": {"votes_per_item": 3, "max_votes_per_item": 3}, "cascade": {"calibration_max_votes": 3}},
    )
    project = Project.open(directory)
    project.cascade(project.crowd()).run(max_rounds=1)
    with project.store.session() as session:
        round_ = session.scalars(select(Round).where(Round.kind == RoundKind.SPLIT)).one()
        per_image = votes_per_image(session, round_.id)
        batches = session.scalar(select(func.count(Hit.batch_id.distinct())))
    assert batches == 1 and round_.follow_up == 0
    assert set(per_image.values()) == {3}
    assert round_.votes_requested == round_.votes_fixed == 450


def test_a_worker_who_sees_an_image_twice_counts_once(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with store.session() as session:
        cat = category_id(session, "cat")
        session.add_all(Item(id=i, sha256=f"{i:064d}", uri=f"/x/{i}.png", width=8, height=8) for i in (1, 2))
        insert_ignoring_duplicates(session, Worker, [{"platform_worker_id": w} for w in ("a", "b", "c")])
        workers = dict(session.execute(select(Worker.platform_worker_id, Worker.id)).all())
        round_ = Round(category_id=cat, number=1, state="reviewed")
        session.add(round_)
        session.flush()
        first = Hit(round_id=round_.id, batch_id="r1", hit_key="h0", assignments_requested=2)
        second = Hit(round_id=round_.id, batch_id="r1:f1", hit_key="h0", assignments_requested=1)
        session.add_all([first, second])
        session.flush()
        # Image 1: "a" says yes in the first HIT and no in the follow-up; "b" says yes.
        plan = [(first, "a", [(1, 1), (2, 0)]), (first, "b", [(1, 1), (2, 0)]), (second, "a", [(1, 0)])]
        for number, (hit, worker, answers) in enumerate(plan):
            assignment = AssignmentRow(
                platform_assignment_id=f"as{number}",
                hit_id=hit.id,
                worker_id=workers[worker],
                status="approved",
                accepted_at=0.0,
                submitted_at=1.0,
            )
            session.add(assignment)
            session.flush()
            session.add_all(
                Vote(assignment_id=assignment.id, item_id=item, category_id=cat, worker_id=workers[worker], answer=a)
                for item, a in answers
            )
    with store.session() as session:
        posterior = human_posterior(session, cat, QualityConfig())
    assert posterior is not None
    counts = dict(zip(posterior.items, posterior.vote_counts.tolist(), strict=True))
    assert counts == {1: 2, 2: 2}  # the follow-up answer of worker "a" on image 1 is not a third vote
    winners = dict(zip(posterior.items, posterior.labels().tolist(), strict=True))
    assert winners[1] == 1 and winners[2] == 0
    assert np.allclose(posterior.probabilities.sum(axis=1), 1.0)
