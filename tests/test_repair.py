"""Label-error repair: cross-fitting, confident learning, and repair passes through the simulated crowd."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sqlalchemy import func, select
from typer.testing import CliRunner

from lsun_crowd import ledger
from lsun_crowd.cli import app
from lsun_crowd.confident_learning import (
    Rule,
    binary_probabilities,
    calibrated_joint,
    confident_joint,
    find_label_issues,
    per_class_thresholds,
)
from lsun_crowd.crossfit import cross_fit, stratified_folds
from lsun_crowd.demo import shows_digit
from lsun_crowd.project import Project
from lsun_crowd.repair import Verdict, decide_suspect
from lsun_crowd.schema import (
    Category,
    ItemRole,
    Job,
    JobKind,
    Label,
    LabelEvent,
    LabelSource,
    Repair,
    RepairState,
    RoundItem,
)

from .conftest import load_benchmark, make_digits_project

# -- cross-fitting -------------------------------------------------------------------------------------


def score_against_truth(session, truth):  # type: ignore[no-untyped-def]
    """The repair benchmark's score (``benchmarks/repair.py``): what repair did to the human labels,
    against the truth."""
    return load_benchmark("repair").score_against_truth(session, truth)


def test_stratified_folds_spread_each_label_evenly() -> None:
    labels = np.array([0] * 23 + [1] * 7)
    folds = stratified_folds(labels, 5, 0)
    for label, count in ((0, 23), (1, 7)):
        per_fold = np.bincount(folds[labels == label], minlength=5)
        assert per_fold.sum() == count
        assert per_fold.max() - per_fold.min() <= 1
    assert np.array_equal(folds, stratified_folds(labels, 5, 0))  # from the seed alone
    with pytest.raises(ValueError, match="at least 2 folds"):
        stratified_folds(labels, 1, 0)


def test_no_example_is_scored_by_a_model_that_trained_on_it() -> None:
    labels = np.array([0, 1] * 20)
    folds = stratified_folds(labels, 4, 3)
    trained_on: list[set[int]] = []
    scored_by: dict[int, int] = {}

    def fit(training: NDArray[np.int64]) -> Callable[[NDArray[np.int64]], NDArray[np.float64]]:
        model = len(trained_on)
        trained_on.append({int(index) for index in training})

        def score(held_out: NDArray[np.int64]) -> NDArray[np.float64]:
            for index in held_out:
                scored_by[int(index)] = model
            return np.full(len(held_out), float(model))

        return score

    scores = cross_fit(folds, fit)
    assert len(trained_on) == 4
    assert sorted(scored_by) == list(range(40))  # every example scored, once
    for index, model in scored_by.items():
        assert index not in trained_on[model]
        assert scores[index] == model
    # Each model trained on every example outside its fold.
    assert all(len(training) == 30 for training in trained_on)


def test_a_model_that_memorizes_its_labels_cannot_vouch_for_a_wrong_one() -> None:
    """A 1-nearest-neighbour model repeats the label of the training example it is given; in sample
    it would confirm every wrong label. Out of fold, each score comes from a neighbour's label."""
    generator = np.random.default_rng(0)
    points = np.repeat(np.arange(20, dtype=np.float64), 2) + generator.normal(0, 0.01, 40)  # pairs of near twins
    truth = (np.repeat(np.arange(20), 2) >= 10).astype(np.int64)
    given = truth.copy()
    given[[4, 31]] = 1 - given[[4, 31]]  # two planted errors; their twins keep the true label

    def fit(training: NDArray[np.int64]) -> Callable[[NDArray[np.int64]], NDArray[np.float64]]:
        def score(held_out: NDArray[np.int64]) -> NDArray[np.float64]:
            nearest = training[np.abs(points[held_out, None] - points[None, training]).argmin(axis=1)]
            return given[nearest].astype(np.float64)

        return score

    in_sample = fit(np.arange(40))(np.arange(40))
    assert np.array_equal(in_sample, given)  # in sample, nothing looks wrong
    # Twins fall into different folds half the time; with 40 folds (leave one out) always.
    out_of_fold = cross_fit(np.arange(40), fit)
    assert set(np.flatnonzero(out_of_fold != given)) == {4, 5, 30, 31}  # the errors and their twins


# -- confident learning --------------------------------------------------------------------------------

# Nine examples, hand-worked: p is each one's probability of class 1.
HAND_LABELS = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0])
HAND_POSITIVE = np.array([0.9, 0.8, 0.7, 0.1, 0.5, 0.2, 0.1, 0.3, 0.95])


def test_confident_learning_by_hand() -> None:
    probabilities = binary_probabilities(HAND_POSITIVE)
    # t_1 = mean p over the five labeled 1 = 3.0 / 5; t_0 = mean 1 - p over the four labeled 0 = 2.45 / 4.
    assert per_class_thresholds(probabilities, HAND_LABELS) == pytest.approx([0.6125, 0.6])
    # Labeled 1 with p = 0.1: 0.9 ≥ t_0, so confidently 0. Labeled 0 with p = 0.95: confidently 1.
    # Labeled 1 with p = 0.5 reaches neither threshold and is not counted.
    joint = confident_joint(probabilities, HAND_LABELS)
    assert joint.tolist() == [[3, 1], [1, 3]]
    # Row 1 holds five labels but four counted: rescaled by 5/4 to [1.25, 3.75], then all over 9.
    assert calibrated_joint(joint, HAND_LABELS) == pytest.approx(np.array([[3, 1], [1.25, 3.75]]) / 9)
    for rule in Rule:
        found = find_label_issues(probabilities, HAND_LABELS, rule)
        if rule is Rule.ARGMAX:
            # The plain disagreement also flags p = 0.5 (a tie, read as class 0) against its label 1.
            assert set(np.flatnonzero(found.issues)) == {3, 4, 8}
            continue
        assert found.ranked.tolist() == [8, 3], rule  # self-confidence 0.05, then 0.1
        assert found.count == 2


def test_confident_learning_finds_planted_noise() -> None:
    """Two overlapping Gaussian classes, 5% of the labels flipped at random, probabilities
    cross-fitted by logistic regression: confident learning finds the flips and little else."""
    generator = np.random.default_rng(7)
    count = 1000
    truth = (generator.random(count) < 0.4).astype(np.int64)
    points = generator.normal(0, 1, (count, 2)) + np.where(truth[:, None] == 1, 2.5, -0.5)
    given = truth.copy()
    flipped = generator.choice(count, size=50, replace=False)
    given[flipped] = 1 - given[flipped]

    def fit(training: NDArray[np.int64]) -> Callable[[NDArray[np.int64]], NDArray[np.float64]]:
        model = LogisticRegression().fit(points[training], given[training])
        return lambda held_out: model.predict_proba(points[held_out])[:, 1]

    positive = cross_fit(stratified_folds(given, 5, 1), fit)
    wrong = set(flipped.tolist())
    results = {}
    for rule in Rule:
        found = find_label_issues(binary_probabilities(positive), given, rule)
        caught = len(wrong & set(found.ranked.tolist()))
        results[rule] = (found.count, caught)
    # Measured: (flagged, of them flipped) per rule. The confident joint's off-diagonal holds 19 + 24
    # examples, all flips; the pruning rules take as many as the calibrated joint estimates (56) and
    # find all 50; the plain disagreement finds them too, with 18 correct labels among its 68.
    assert results[Rule.CONFIDENT_JOINT] == (43, 43)
    assert results[Rule.PRUNE_BY_NOISE_RATE] == (56, 50)
    assert results[Rule.PRUNE_BY_CLASS] == (56, 50)
    assert results[Rule.BOTH] == (56, 50)
    assert results[Rule.ARGMAX] == (68, 50)


@pytest.mark.parametrize(
    ("probabilities", "labels", "message"),
    [
        (np.array([0.2, 0.8]), np.array([0, 1]), "examples × classes"),
        (binary_probabilities(np.array([0.2, 0.8])), np.array([0, 1, 1]), "3 label"),
        (binary_probabilities(np.array([0.2, 0.8])), np.array([0, 2]), "class indices"),
        (binary_probabilities(np.array([0.2, 0.8])), np.array([0.0, 1.0]), "class indices"),
        (np.array([[0.2, 1.8], [0.5, 0.5]]), np.array([0, 1]), "probabilities in"),
    ],
)
def test_bad_input_is_a_clear_error(probabilities: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        find_label_issues(probabilities, labels)


# -- repair passes through the simulated crowd ---------------------------------------------------------

# A small, noisy project: many images the crowd finds ambiguous, so people make mistakes to repair;
# three folds keep it fast.
NOISY = {
    "crowd": {"settings": {"ambiguous_fraction": 0.15}},
    "repair": {"enabled": True, "folds": 3},
    # The default guarantee: the model labels nothing here, so people label every image.
    "cascade": {"confidence": 0.95, "target_npv": 0.995, "target_recall": 0.9, "calibration_fraction": 0.4},
}


@pytest.fixture(scope="module")
def repaired(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The small project run to the end, with the repair pass it makes when each category finishes."""
    directory = tmp_path_factory.mktemp("repair") / "project"
    targets = make_digits_project(directory, limit=400, sample=120, overrides=NOISY)
    project = Project.open(directory)
    outcomes = project.cascade(project.crowd()).run()
    project.close()
    assert [outcome.reason for outcome in outcomes] == ["resolved", "resolved"]
    return directory, targets


def test_repair_in_the_cascade_flags_and_fixes_wrong_human_labels(repaired: tuple[Path, np.ndarray]) -> None:
    directory, targets = repaired
    project = Project.open(directory)
    with project.store.session() as session:
        score = score_against_truth(session, lambda uri, category: shows_digit(targets, uri, category))
        repairs = session.execute(select(Repair.state, func.count()).group_by(Repair.state)).all()
        events = session.execute(
            select(LabelEvent.reason, LabelEvent.source, LabelEvent.job_id).where(LabelEvent.origin.like("repair:%"))
        ).all()
        kinds = set(session.scalars(select(Job.kind).where(Job.id.in_([job for _, _, job in events]))))
    project.close()
    print(score, repairs)
    # The noisy crowd made mistakes to find (fewer than before issue 24: the model now labels part
    # of the pool, so people label less of it).
    assert score.wrong_before >= 4
    assert score.flagged_share >= 0.7
    assert score.wrong_after * 2 <= score.wrong_before
    assert score.changed_right > score.changed_wrong
    assert score.votes > 0 and score.spent > 0
    # Every change is a human label event of a repair job, with its reason.
    assert events and kinds == {JobKind.REPAIR}
    assert all(source == LabelSource.HUMAN for _, source, _ in events)
    assert all(reason.startswith("repair: out-of-fold score") for reason, _, _ in events)


def test_repair_command_finds_and_reverts_planted_errors(repaired: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """Three correct human labels of a finished project turned wrong; ``lsun-crowd repair`` flags
    them, asks fresh workers, and writes the right labels back."""
    directory = tmp_path / "project"
    shutil.copytree(repaired[0], directory)
    project = Project.open(directory)
    with project.store.session() as session:
        digit = session.scalar(select(Category.id).where(Category.name == "digit-0"))
        assert digit is not None
        calibration = select(RoundItem.item_id).where(RoundItem.role == ItemRole.CALIBRATION)
        # Planted among the uniform draws' labels, as before guided rounds (lsun_crowd.guided):
        # with guided candidates among the first three positives, 1 of them was flagged.
        candidates = select(RoundItem.item_id).where(RoundItem.role == ItemRole.CANDIDATE)
        checked = select(Repair.item_id)  # a pass never flags an image an earlier one sent to people
        planted = session.execute(
            select(Label.item_id, Label.label)
            .where(
                Label.category_id == digit,
                Label.source == LabelSource.HUMAN,
                Label.item_id.notin_(calibration),
                Label.item_id.notin_(candidates),
                Label.item_id.notin_(checked),
            )
            .order_by(Label.label.desc(), Label.item_id)
            .limit(3)
        ).all()
        for item, label in planted:
            ledger.revise_labels(
                session, digit, [ledger.NewLabel(item, 1 - label, 0.999, 3)], source=LabelSource.HUMAN, origin="test"
            )
    project.close()
    result = CliRunner().invoke(app, ["repair", "--project", str(directory), "--category", "digit-0"])
    assert result.exit_code == 0, result.output
    assert "digit-0" in result.output and "changed" in result.output
    project = Project.open(directory)
    with project.store.session() as session:
        found = {
            int(item): (state, new)
            for item, state, new in session.execute(
                select(Repair.item_id, Repair.state, Repair.new_label).where(Repair.category_id == digit)
            )
        }
        now = dict(session.execute(select(Label.item_id, Label.label).where(Label.category_id == digit)).all())
    project.close()
    # Found and written back: at least two of the three. (Among this project's 15% ambiguous images
    # a planted error the model does not doubt enough is not flagged; issue 24 changed the model.)
    reverted = [item for item, label in planted if found.get(item) == (RepairState.CHANGED, label)]
    assert len(reverted) >= 2
    assert all(now[item] == label for item, label in planted if item in reverted)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["--project", "{missing}"], "no configuration file"), (["--category", "digit-9"], "no category 'digit-9'")],
)
def test_repair_command_bad_input_is_one_line(
    repaired: tuple[Path, np.ndarray], tmp_path: Path, arguments: list[str], message: str
) -> None:
    given = [argument.format(missing=tmp_path / "missing") for argument in arguments]
    if "--project" not in given:
        given += ["--project", str(repaired[0])]
    result = CliRunner().invoke(app, ["repair", *given])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_score_labels_never_scores_an_image_with_a_head_that_trained_on_it(
    repaired: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real store and embedding cache: each head records the embeddings it trained on
    and those it scored; no scored embedding is among its training ones, and every human label is
    scored exactly once."""
    import lsun_crowd.classifier as classifier
    import lsun_crowd.repair as repair

    heads: list[tuple[set[bytes], set[bytes]]] = []

    class RecordingTrainer:
        """Stands in for a fold's head in classifier.cross_fit_heads: records what it trained on
        and what it scored."""

        small = False

        def __init__(self, embeddings: np.ndarray, *args: object) -> None:
            self.record: tuple[set[bytes], set[bytes]] = ({row.tobytes() for row in embeddings}, set())
            heads.append(self.record)

        def epoch(self) -> None:
            pass

        def held_out(self, embeddings: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, float]:
            self.record[1].update(row.tobytes() for row in embeddings)
            return np.zeros(len(embeddings)), 0.0

    monkeypatch.setattr(classifier, "_Trainer", RecordingTrainer)
    project = Project.open(repaired[0])
    context = project.cascade(project.crowd()).context
    with project.store.session() as session:
        digit = session.scalar(select(Category.id).where(Category.name == "digit-1"))
        humans = session.scalar(
            select(func.count(Label.id)).where(Label.category_id == digit, Label.source == LabelSource.HUMAN)
        )
    assert digit is not None
    scored = repair.score_labels(context, digit)
    project.close()
    assert scored is not None and len(scored.items) == humans
    assert len(heads) == context.config.repair.folds
    assert sum(len(scored_rows) for _, scored_rows in heads) == humans
    for trained, scored_rows in heads:
        assert trained.isdisjoint(scored_rows)


def test_a_suspect_s_verdict_weighs_new_votes_the_prior_and_a_bounded_model() -> None:
    # Four new votes for positive (about 2.2 nats each for a good worker) against an 11% prior
    # (-2.1 nats): the label flips from 0 to 1; it stands where it already was 1.
    changed = decide_suspect(-2.1, 8.8, None, 2.2, 0, 0.99, more_allowed=True)
    assert changed.verdict == Verdict.CHANGED and changed.label == 1 and changed.certainty > 0.99
    kept = decide_suspect(-2.1, 8.8, None, 2.2, 1, 0.99, more_allowed=True)
    assert kept.verdict == Verdict.KEPT and kept.label == 1
    # One vote each way: uncertain, so asked again while the cap allows, else unresolved.
    assert decide_suspect(0.0, 0.0, None, 2.2, 0, 0.99, more_allowed=True).verdict == Verdict.AGAIN
    unresolved = decide_suspect(0.0, 0.0, None, 2.2, 0, 0.99, more_allowed=False)
    assert unresolved.verdict == Verdict.UNRESOLVED and unresolved.label is None
    # The model counts at most one good worker's vote: a sure model does not outvote four people,
    # though it leaves them short of the bar.
    against = decide_suspect(-2.1, 8.8, -50.0, 2.2, 0, 0.99, more_allowed=True)
    assert against.model == -2.2 and against.verdict == Verdict.AGAIN


@settings(max_examples=200, deadline=None)
@given(
    prior=st.floats(-5, 5),
    people=st.floats(-20, 20),
    model=st.floats(-1e6, 1e6),
    bound=st.floats(0, 5),
    current=st.integers(0, 1),
    more=st.booleans(),
)
def test_a_suspect_s_verdict_never_lets_the_model_count_beyond_its_bound(
    prior: float, people: float, model: float, bound: float, current: int, more: bool
) -> None:
    clipped = max(-bound, min(bound, model))
    assert decide_suspect(prior, people, model, bound, current, 0.99, more) == decide_suspect(
        prior, people, clipped, bound, current, 0.99, more
    )
    decided = decide_suspect(prior, people, model, bound, current, 0.99, more)
    # A label is decided only above the bar, and kept exactly when it is the current one.
    assert (decided.label is None) == (decided.verdict in (Verdict.AGAIN, Verdict.UNRESOLVED))
    if decided.label is not None:
        assert decided.certainty >= 0.99
        assert (decided.verdict == Verdict.KEPT) == (decided.label == current)
