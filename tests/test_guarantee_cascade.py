"""The guarantee through a whole cascade on a simulated pool whose truth is known: what each round
tested and spent, and the final auto-labels measured against the truth."""

from __future__ import annotations

import numpy as np
import pytest
from lsun_crowd_mock import CrowdMix, SimulatedCrowd
from sqlalchemy import func, select

from lsun_crowd.certificate import certificates
from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.loop import Cascade
from lsun_crowd.project import Project
from lsun_crowd.schema import (
    AssignmentRow,
    GuaranteeSide,
    Hit,
    Item,
    ItemRole,
    Label,
    LabelSource,
    Round,
    RoundItem,
    RoundTest,
    Vote,
)
from lsun_crowd.synthetic import SyntheticPool, build
from lsun_crowd.testing import write_project

POOL = SyntheticPool(items=6_000, categories=("thing",), dim=8, positive_rate=0.2, separation=6.0, seed=5)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("guarantee")
    write_project(
        root,
        {
            "project": {"name": "guarantee", "seed": 5, "categories": ["thing"]},
            "crowd": {"adapter": "mock", "poll_seconds": 0, "reward_per_assignment": 0.01},
            "model": {"hidden_units": 0, "epochs": 400},
            # NPV 0.99: the default 0.995 needs about 1,700 clean calibration negatives per round.
            "cascade": {"sample_per_round": 2000, "calibration_fraction": 0.6, "target_npv": 0.99, "budget": 1000},
        },
    )
    project = Project.open(root)
    cache = EmbeddingCache(root / "cache" / "synthetic", POOL.dim)
    build(POOL, project.store, cache)
    crowd = SimulatedCrowd(POOL.truth(), CrowdMix(seed=5), root / "mock-crowd.sqlite")
    Cascade(project.config, project.store, crowd, lambda: cache).run(max_rounds=2)
    return project


def test_each_round_tests_at_its_share_of_the_budget(finished: Project) -> None:
    with finished.store.session() as session:
        rows = session.execute(
            select(Round.number, RoundTest).join(RoundTest, RoundTest.round_id == Round.id).order_by(Round.number)
        ).all()
    by_round = {(number, test.side): test for number, test in rows}
    first_positive = by_round[(1, GuaranteeSide.POSITIVE)]
    first_negative = by_round[(1, GuaranteeSide.NEGATIVE)]
    # Each side has half of 1 - 0.95; the first round spends half of that, the next half the rest.
    assert first_positive.delta == pytest.approx(0.0125) and first_negative.delta == pytest.approx(0.0125)
    assert first_positive.calibration_size == 1200 and first_positive.mode == "ltt"
    assert first_positive.threshold is not None and first_negative.threshold is not None
    # The recall slack 1 - 0.9 goes three quarters to the first round that discards.
    assert first_negative.recall_slack == pytest.approx(0.075)
    assert first_positive.p_value is not None and first_positive.p_value <= first_positive.delta
    assert first_positive.tested >= 144 and first_positive.labeled > 500
    assert first_negative.tested >= 435 and first_negative.labeled > 1000
    assert first_positive.bound is not None and first_positive.bound >= 0.97
    for side in GuaranteeSide:
        later = by_round.get((2, side))
        if later is not None and later.delta > 0:
            assert later.delta == pytest.approx(0.00625)
    assert sum(test.delta for test in by_round.values()) <= 0.05 + 1e-12


def test_auto_labels_meet_their_targets_against_the_truth(finished: Project) -> None:
    truth = POOL.truth()
    counts = {(label, right): 0 for label in (0, 1) for right in (False, True)}
    with finished.store.session() as session:
        rows = session.execute(
            select(Item.uri, Label.label, Label.confidence)
            .join(Label, Label.item_id == Item.id)
            .where(Label.source == LabelSource.MODEL)
        ).all()
        for uri, label, _ in rows:
            counts[(label, truth(uri, "thing") == bool(label))] += 1
        # A model label's confidence is the calibrated probability that it is right.
        confidences = np.array([confidence for _, _, confidence in rows])
        assert ((confidences >= 0) & (confidences <= 1)).all() and confidences.mean() > 0.95
        (certificate,) = certificates(session, ["thing"])
    precision = counts[(1, True)] / (counts[(1, True)] + counts[(1, False)])
    npv = counts[(0, True)] / (counts[(0, True)] + counts[(0, False)])
    positives = int(POOL.truth_matrix(np.arange(POOL.items, dtype=np.int64))[:, 0].sum())
    assert precision >= 0.97 and npv >= 0.99
    assert 1 - counts[(0, False)] / positives >= 0.9
    assert certificate.auto_positive == counts[(1, True)] + counts[(1, False)]
    assert certificate.precision == 0.97 and certificate.npv == 0.99
    assert certificate.recall_kept is not None and certificate.recall_kept >= 0.9
    assert certificate.confidence >= 0.95
    assert "with probability >= 0.9" in certificate.describe()


def test_calibration_images_calibrate_only_their_round(finished: Project) -> None:
    with finished.store.session() as session:
        active = session.scalar(
            select(RoundItem.item_id).where(RoundItem.role == ItemRole.CALIBRATION, RoundItem.active)
        )
        first = select(Round.id).where(Round.number == 1).scalar_subquery()
        votes = session.execute(
            select(RoundItem.role, func.count(Vote.id))
            .join(Vote, (Vote.item_id == RoundItem.item_id) & Vote.is_gold.is_(False))
            .join(AssignmentRow, AssignmentRow.id == Vote.assignment_id)
            .join(Hit, Hit.id == AssignmentRow.hit_id)
            .where(RoundItem.round_id == first, Hit.round_id == first)
            .group_by(RoundItem.item_id, RoundItem.role)
        ).all()
    assert active is None  # every split retired its own sample; later models train on it
    # A calibration image people find hard gets votes past the ordinary cap (5), up to its own (9).
    most = {role: max(count for name, count in votes if name == role) for role in ("train", "calibration")}
    assert most["train"] <= 5 < most["calibration"] <= 9
