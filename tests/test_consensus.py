"""Model-aware consensus: Platt scaling, the model as one more annotator, stored round heads."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select

from lsun_crowd.aggregate import Posterior
from lsun_crowd.classifier import Head, train_head
from lsun_crowd.config import ModelConfig
from lsun_crowd.consensus import evidence_bound, fit_platt, with_model
from lsun_crowd.context import RoundRef
from lsun_crowd.project import Project
from lsun_crowd.review import _with_previous_model, human_posterior
from lsun_crowd.schema import Item, Round, RoundItem, RoundKind, RoundModel

from .conftest import make_digits_project


def posterior(positive: list[float]) -> Posterior:
    p = np.array(positive)
    return Posterior(tuple(range(len(p))), (0, 1), np.stack([1 - p, p], axis=1), {"w": 0.9}, np.full(len(p), 2))


def test_platt_scaling_recovers_a_known_calibration() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 2, 20_000)
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-(1.5 * scores - 1.0)))).astype(int)
    platt = fit_platt(scores, labels, min_size=30)
    assert platt is not None
    assert platt.slope == pytest.approx(1.5, abs=0.06)
    assert platt.intercept == pytest.approx(-1.0, abs=0.06)
    assert platt.base_rate == pytest.approx(labels.mean(), abs=1e-3)


def test_platt_scaling_stays_finite_and_refuses_what_it_cannot_calibrate() -> None:
    separable = fit_platt(np.array([-9.0, -8, -7, 7, 8, 9e3]), np.array([0, 0, 0, 1, 1, 1]), min_size=2)
    assert separable is not None and math.isfinite(separable.slope) and math.isfinite(separable.intercept)
    # Smoothed targets: three positives never make the model surer than (3 + 1) / (3 + 2) = 0.8.
    evidence = separable.log_likelihood_ratio(np.array([9.0]))[0]
    assert 1 / (1 + math.exp(-evidence)) <= 0.8 + 1e-9
    assert fit_platt(np.arange(10.0), np.ones(10, dtype=int), min_size=2) is None  # one class only
    assert fit_platt(np.arange(10.0), np.arange(10) % 2, min_size=30) is None  # too few labels


def test_model_evidence_adds_to_the_crowds_log_odds() -> None:
    crowd = posterior([0.9, 0.9, 0.5])
    combined = with_model(crowd, np.array([math.log(4), 0.0, -math.log(3)]))
    # 0.9 is odds 9; four times that is 36, so 36 / 37. An item without evidence keeps its row exactly.
    assert combined.probabilities[0, 1] == pytest.approx(36 / 37)
    assert np.array_equal(combined.probabilities[1], crowd.probabilities[1])
    assert combined.probabilities[2, 1] == pytest.approx(0.25)
    assert np.allclose(combined.probabilities.sum(axis=1), 1)
    assert combined.worker_accuracy == {"w": 0.9}
    certain = with_model(posterior([1.0]), np.array([-50.0]))  # votes beyond doubt stay finite
    assert np.isfinite(certain.probabilities).all() and certain.probabilities[0, 1] > 0.5
    with pytest.raises(ValueError, match="one log-likelihood ratio per item"):
        with_model(posterior([0.5]), np.zeros(2))


@pytest.mark.parametrize("hidden", [0, 16])
def test_a_stored_head_scores_exactly_as_trained(hidden: int) -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 12)).astype(np.float32)
    targets = (features[:, 0] > 0).astype(np.float64)
    head = train_head(features, targets, np.ones(200), ModelConfig(hidden_units=hidden, epochs=5), seed=3)
    again = Head.from_bytes(head.to_bytes(), torch.device("cpu"))
    assert np.array_equal(again.logits(features), head.logits(features))


def test_the_previous_round_votes_on_training_images_only(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    # 400 a round: enough zeros for a first split (cascade.min_class_labels).
    targets = make_digits_project(directory, limit=900, digits=range(1), sample=400)
    project = Project.open(directory)
    cascade = project.cascade(project.crowd())
    cascade.run(max_rounds=2)
    with project.store.session() as session:
        first, second = session.scalars(select(Round).where(Round.kind == RoundKind.SPLIT).order_by(Round.number)).all()
        model = session.get(RoundModel, first.id)
        roles = dict(
            session.execute(select(RoundItem.item_id, RoundItem.role).where(RoundItem.round_id == second.id)).all()
        )
        uris = dict(session.execute(select(Item.id, Item.uri)).all())
        crowd_only = human_posterior(session, first.category_id, project.config.quality)
    assert model is not None and model.platt_slope is not None and model.platt_slope > 0
    assert model.calibration_size >= 30
    assert crowd_only is not None
    combined, evidence = _with_previous_model(
        cascade.context, RoundRef("digit-0", first.category_id, second), crowd_only
    )
    assert evidence is not None
    moved = np.abs(combined.probabilities[:, 1] - crowd_only.probabilities[:, 1]) > 0
    # Never by more than one good worker's vote, however sure the model.
    bound = evidence_bound(crowd_only)
    assert np.abs(evidence).max() <= bound + 1e-12 and (np.abs(evidence) > bound - 1e-9).any()
    role = np.array([roles.get(item, "") for item in crowd_only.items])
    assert moved[role == "train"].mean() > 0.95  # the model has a say on (nearly) every training image
    assert not moved[role != "train"].any()  # and none on calibration images or earlier rounds' images
    # On the training images it is a better annotator than none: lower log loss against the truth.
    truth = np.array([targets[int(Path(uris[item]).stem)] == 0 for item in crowd_only.items])[role == "train"]

    def log_loss(p: np.ndarray) -> float:
        return float(-np.log(np.clip(np.where(truth, p, 1 - p), 1e-12, 1)).mean())

    assert log_loss(combined.probabilities[role == "train", 1]) < log_loss(crowd_only.probabilities[role == "train", 1])
    project.close()
