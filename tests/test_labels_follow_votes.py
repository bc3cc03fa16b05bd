"""No human label goes against a clear majority of its own votes, whatever the model says.

The cascade's path from votes to a human label: gold-anchored Dawid–Skene over the category's votes
(:func:`lsun_crowd.review.human_posterior`), the previous round's model as one more annotator
bounded by one good worker's vote (:func:`lsun_crowd.consensus.with_model`), and the labeling rule
(:func:`lsun_crowd.review.decide_labels`). A certification's capped images go through the same
clear-majority rule (:func:`lsun_crowd.certify.people_labels`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from lsun_crowd.aggregate import Posterior, Votes
from lsun_crowd.consensus import evidence_bound, model_share, with_model
from lsun_crowd.dawid_skene import dawid_skene
from lsun_crowd.project import Project
from lsun_crowd.review import decide_labels
from lsun_crowd.schema import Item, Label, RoundModel, Vote

BAR = 0.997
GOOD_WORKERS = [f"good{index}" for index in range(6)]
GOLD = 40  # gold images every good worker answered right: their good record


def _posterior(votes: list[list[int]], base_positive: bool) -> tuple[Posterior, list[int]]:
    """Dawid–Skene over a round's images (ids 0..n-1) voted on by good workers, beside gold images
    each of them got right; the gold is mostly one class, like a category at a low base rate."""
    triples: list[tuple[int, str, int]] = []
    for item, answers in enumerate(votes):
        triples += [(item, GOOD_WORKERS[position], answer) for position, answer in enumerate(answers)]
    known: dict[int, int] = {}
    gold_ids = []
    for number in range(GOLD):
        item = 10_000 + number
        truth = int((number % 10 == 0) != base_positive)  # a tenth of one class, the rest the other
        gold_ids.append(item)
        triples += [(item, worker, truth) for worker in GOOD_WORKERS]
        known[item] = truth
    table = Votes.from_triples(triples, classes=(0, 1))
    index = {item: position for position, item in enumerate(table.items)}
    posterior = dawid_skene(table, {index[item]: answer for item, answer in known.items()}, 4.0, 1.0, device="cpu")
    return posterior, list(range(len(votes)))


def _clear(answers: list[int]) -> int | None:
    if not answers:
        return None
    yes = sum(answers)
    if len(answers) >= 2 and yes in (0, len(answers)):
        return int(yes > 0)
    if len(answers) >= 5 and max(yes, len(answers) - yes) >= 0.8 * len(answers):
        return int(yes * 2 > len(answers))
    return None


votes_of_an_image = st.lists(st.integers(0, 1), min_size=0, max_size=6)


@settings(max_examples=150, deadline=None)
@given(
    round_votes=st.lists(votes_of_an_image, min_size=1, max_size=12),
    scores=st.lists(
        st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([-1e300, 1e300, 0.0])),
        min_size=12,
        max_size=12,
    ),
    base_positive=st.booleans(),
)
def test_no_label_goes_against_a_clear_majority_of_good_workers(
    round_votes: list[list[int]], scores: list[float], base_positive: bool
) -> None:
    posterior, round_items = _posterior(round_votes, base_positive)
    evidence = np.zeros(len(posterior.items))
    position = {item: index for index, item in enumerate(posterior.items)}
    for item in round_items:
        if item in position:
            evidence[position[item]] = scores[item]
    bound = evidence_bound(posterior)
    bounded = np.clip(evidence, -bound, bound)
    decided = decide_labels(with_model(posterior, bounded), set(round_items), BAR, 2, {}, bounded)
    for label in decided.labels:
        clear = _clear(round_votes[label.item_id])
        assert clear is None or label.label == clear, (round_votes[label.item_id], scores[label.item_id], label)
        assert -1.0 <= label.model_share <= 1.0


@settings(max_examples=60, deadline=None)
@given(score=st.floats(-1e6, 1e6, allow_nan=False), answer=st.integers(0, 1), base_positive=st.booleans())
def test_a_one_image_round_with_two_unanimous_votes_gets_their_label_or_more_votes(
    score: float, answer: int, base_positive: bool
) -> None:
    # The trial's case: a round of one image, two unanimous votes, a model sure of the opposite.
    posterior, items = _posterior([[answer, answer]], base_positive)
    evidence = np.where(np.array([item == 0 for item in posterior.items]), score, 0.0)
    bound = evidence_bound(posterior)
    decided = decide_labels(with_model(posterior, evidence, bound), set(items), BAR, 2, {}, evidence)
    assert all(label.label == answer for label in decided.labels)


def test_the_model_is_worth_one_good_vote_at_most() -> None:
    posterior, _ = _posterior([[1, 1], [1]], base_positive=False)
    bound = evidence_bound(posterior)
    assert 2.0 < bound <= math.log(0.99 / 0.01)
    # An extreme score moves an image's log-odds by the bound, no more.
    round_rows = [index for index, item in enumerate(posterior.items) if item in (0, 1)]
    before = posterior.probabilities[round_rows, 1]
    after = with_model(posterior, np.full(len(posterior.items), -1e9), bound).probabilities[round_rows, 1]
    moved = np.log(before / (1 - before)) - np.log(after / (1 - after))
    assert np.allclose(moved, bound, atol=1e-6)
    # The model's share: the part of the label's log-odds it gave (here all of a vote-less image's).
    lone = Posterior((0,), (0, 1), np.array([[0.5, 0.5]]), {}, np.array([0]))
    shared = model_share(with_model(lone, np.array([2.0])), np.array([2.0]))
    assert shared[0] == 1.0


def test_a_posterior_against_a_clear_majority_is_held_back_for_more_votes() -> None:
    # Whatever produced it (a worker estimated as an adversary, a prior), a posterior sure of the
    # answer four of five votes did not give labels nothing: the image gets more votes.
    counts = np.array([[1.0, 4.0], [0.0, 2.0], [2.0, 1.0]])
    posterior = Posterior(
        (0, 1, 2),
        (0, 1),
        np.array([[0.999, 0.001], [0.9999, 0.0001], [0.999, 0.001]]),
        {},
        np.array([5, 2, 3]),
        answer_counts=counts,
    )
    assert posterior.clear_majority().tolist() == [1, 1, -1]
    decided = decide_labels(posterior, {0, 1, 2}, BAR, 2, {})
    assert [label.item_id for label in decided.labels] == [2]
    assert decided.confidence[0] == decided.confidence[1] == 0.0


def test_a_flat_image_added_late_gets_its_votes_label_or_more_votes(tmp_path: Path) -> None:
    # The trial's case, through the real cascade: a finished project without gold, then an image
    # unlike any the model trained on (a flat bright square), which the simulated workers see as a
    # zero. It goes out as a round of one image, with the last model voting on it.
    from PIL import Image
    from sklearn.datasets import load_digits
    from typer.testing import CliRunner

    from lsun_crowd.cli import app
    from lsun_crowd.testing import edit_init_config

    runner = CliRunner(env={"COLUMNS": "200"})
    digits = load_digits()
    pool = tmp_path / "pool"
    pool.mkdir()
    truth = ["uri,category,label"]
    for index in range(300):
        path = pool / f"{index:03d}.png"
        Image.fromarray((digits.images[index] * 16).astype(np.uint8)).save(path)
        truth.append(f"{path},zero,{int(digits.target[index] == 0)}")
    late = tmp_path / "late" / "flat.png"
    late.parent.mkdir()
    Image.new("L", (8, 8), 255).save(late)
    truth.append(f"{late},zero,1")
    (tmp_path / "truth.csv").write_text("\n".join(truth) + "\n")
    project = tmp_path / "p"
    assert runner.invoke(app, ["init", str(project)]).exit_code == 0
    edit_init_config(
        project,
        {
            "categories = []": 'categories = ["zero"]',
            "poll_seconds = 30": "poll_seconds = 0",
            'backbone = "resnet18"': 'backbone = "pixels"',
            "image_size = 224": "image_size = 8",
            # Loose targets and few labels a class: a pool this small still trains a model, which votes.
            "min_class_labels = 20": "min_class_labels = 5",
            "sample_per_round = 400": "sample_per_round = 150",
            "target_precision = 0.97": "target_precision = 0.9",
            "target_npv = 0.995": "target_npv = 0.9",
            "target_recall = 0.9": "target_recall = 0",
            "\nconfidence = 0.95 ": "\nconfidence = 0.5 ",
            "[crowd.settings]": f'[crowd.settings]\ntruth_file = "{tmp_path / "truth.csv"}"',
        },
    )
    assert runner.invoke(app, ["ingest", "--project", str(project), str(pool)]).exit_code == 0
    first = runner.invoke(app, ["run", "--project", str(project)])
    assert first.exit_code == 0, first.output
    assert "no gold answers for zero" in " ".join(first.output.split())
    assert runner.invoke(app, ["ingest", "--project", str(project), str(late.parent)]).exit_code == 0
    second = runner.invoke(app, ["run", "--project", str(project)])
    assert second.exit_code == 0, second.output

    opened = Project.open(project)
    with opened.store.session() as session:
        item = session.scalar(select(Item.id).where(Item.uri == str(late)))
        models = session.scalar(select(func.count()).select_from(RoundModel))
        label = session.execute(
            select(Label.label, Label.source, Label.model_share).where(Label.item_id == item)
        ).first()
        answers = [int(answer) for answer in session.scalars(select(Vote.answer).where(Vote.item_id == item))]
    opened.close()
    assert models >= 1  # a model was there to vote
    clear = _clear(answers)
    if label is not None:
        assert label.source == "human" and (clear is None or label.label == clear), (answers, label)
        assert -1.0 <= label.model_share <= 1.0
