"""Multi-label output and single-label groups: the per-image export against a pool's truth, the
status count, group validation, and conflicts sent to the simulated crowd and settled."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from lsun_crowd import ledger
from lsun_crowd.cli import app
from lsun_crowd.config import ConfigError, GroupConfig
from lsun_crowd.conflicts import NONE, tally
from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.export import export_labels
from lsun_crowd.multilabel import export_multilabel, multilabel_status
from lsun_crowd.project import Project
from lsun_crowd.runner import Outcome
from lsun_crowd.schema import (
    Category,
    ChoiceVote,
    Gold,
    GroupJob,
    Item,
    Job,
    JobKind,
    JobState,
    Label,
    LabelEvent,
    LabelSource,
)
from lsun_crowd.store import Store, category_id
from lsun_crowd.synthetic import SyntheticPool, build
from lsun_crowd.testing import digits_project, write_project

CATEGORIES = ("red", "round", "large")


def label_from_truth(store: Store, truth: dict[tuple[int, str], bool], skip: set[tuple[int, str]]) -> None:
    """A label for every (image, category) that has no gold answer and is not in ``skip``."""
    with store.session() as session:
        gold = {(int(item), int(cat)) for item, cat in session.execute(select(Gold.item_id, Gold.category_id))}
        ids = {name: category_id(session, name) for name in {name for _, name in truth}}
        for name, cat_id in ids.items():
            labels = [
                ledger.NewLabel(item, int(value), 0.99, 3)
                for (item, category), value in sorted(truth.items())
                if category == name and (item, cat_id) not in gold and (item, name) not in skip
            ]
            ledger.record_labels(session, cat_id, labels, source=LabelSource.HUMAN, origin="test")


def test_multilabel_export_of_an_overlapping_pool_matches_the_truth(tmp_path: Path) -> None:
    pool = SyntheticPool(items=400, categories=CATEGORIES, dim=4, positive_rate=0.35, seed=2)
    write_project(tmp_path, {"project": {"name": "overlap", "categories": list(CATEGORIES)}})
    project = Project.open(tmp_path)
    build(pool, project.store, EmbeddingCache(tmp_path / "cache", pool.dim))
    judge = pool.truth()
    with project.store.session() as session:
        uris = {int(item): str(uri) for item, uri in session.execute(select(Item.id, Item.uri))}
        known = {
            (int(item), str(name))
            for item, name in session.execute(
                select(Gold.item_id, Category.name).join(Category, Category.id == Gold.category_id)
            )
        }
    truth = {(item, name): judge(uri, name) for item, uri in uris.items() for name in CATEGORIES}
    # The last 25 images lack their "large" label (gold answers are for the first ones).
    unlabeled = {(item, "large") for item in sorted(uris)[-25:]} - known
    label_from_truth(project.store, truth, unlabeled)

    out = tmp_path / "labels.jsonl"
    summary = export_multilabel(project.store, out, page=37)  # many pages, so every page boundary shows
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.records == len(records) == 400 and summary.held_back_total == 0
    several = expected_several = 0
    for record in records:
        item = next(item for item, uri in uris.items() if uri == record["uri"])
        shown = {name for name in CATEGORIES if truth[(item, name)]}
        assert set(record["labels"]) == set(CATEGORIES)
        for name in CATEGORIES:
            label = record["labels"][name]
            if (item, name) in unlabeled and label["source"] is None:
                assert label == {
                    "label": "unlabeled",
                    "source": None,
                    "confidence": None,
                    "round": None,
                    "votes": 0,
                    "reason": "not yet sampled",  # these tests write labels without asking anyone
                }
            else:
                assert label["label"] == ("positive" if truth[(item, name)] else "negative")
                assert (label["source"], label["confidence"]) == ("human", 1.0 if (item, name) in known else 0.99)
        assert set(record["positive"]) == shown - {name for i, name in unlabeled if i == item}
        several += len(record["positive"]) >= 2
        expected_several += len(shown - {name for i, name in unlabeled if i == item}) >= 2
    # The pool overlaps: about a quarter of the images show two or three of the categories.
    true_several = sum(sum(truth[(item, name)] for name in CATEGORIES) >= 2 for item in uris)
    assert 80 <= true_several <= 150
    assert several == multilabel_status(project.store, []).positive_in_several
    assert several == expected_several and true_several - 25 <= several < true_several and len(unlabeled) == 25

    as_csv = tmp_path / "labels.csv"
    assert export_labels(project.store, as_csv, "multilabel").records == 400
    with as_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:6] == ["uri", "sha256", "positive", "large", "red", "round"]
    assert [row["positive"].split(";") if row["positive"] else [] for row in rows] == [r["positive"] for r in records]
    assert all(row["red:source"] == "human" for row in rows)
    project.close()


def test_status_and_export_name_bad_input_without_a_traceback(tmp_path: Path) -> None:
    categories = ["a", "b", "c"]
    for groups, message in [
        ([{"name": "g", "categories": ["a", "x"]}], "groups.0.categories: 'x' is not one of project.categories"),
        (
            [{"name": "g", "categories": ["a", "b"]}, {"name": "h", "categories": ["b", "c"]}],
            "groups.1.categories: 'b' is also in 'g'",
        ),
        ([{"name": "g", "categories": ["a", "a"]}], "groups.0.categories: 'a' is twice in this group"),
        ([{"name": "g", "categories": ["a", "b"]}, {"name": "g", "categories": ["c", "c"]}], "groups.1.name"),
        ([{"name": "g", "categories": ["a"]}], "project.groups.0.categories: List should have at least 2"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            write_project(tmp_path, {"project": {"categories": categories, "groups": groups}})
    write_project(tmp_path, {"project": {"categories": categories}})
    result = CliRunner().invoke(app, ["export", "--project", str(tmp_path), "--out", "x", "--format", "xml"])
    assert result.exit_code == 2 and "--format must be jsonl, csv or multilabel" in result.output
    result = CliRunner().invoke(app, ["conflicts", "--project", str(tmp_path)])
    assert result.exit_code == 2 and "project.groups: no single-label group is declared" in result.output
    assert "Traceback" not in result.output


def test_a_multi_class_majority_settles_a_group() -> None:
    group = GroupConfig(name="g", categories=["a", "b", "c"], exhaustive=True, votes=3)
    assert tally(group, [frozenset("a"), frozenset("a"), frozenset("b")]) == ("a", pytest.approx(2 / 3))
    # Ticking two splits the vote; "none" says nothing in an exhaustive group.
    assert tally(group, [frozenset("ab"), frozenset("a"), frozenset()]) == ("a", pytest.approx(0.75))
    assert tally(group, [frozenset("a"), frozenset("b"), frozenset("c")])[0] is None
    assert tally(group, [frozenset("a")])[0] is None  # one answer of three asked is not enough
    open_group = GroupConfig(name="g", categories=["a", "b"], votes=3)
    assert tally(open_group, [frozenset(), frozenset(), frozenset("a")]) == (NONE, pytest.approx(2 / 3))


def conflicted_digits_project(directory: Path) -> tuple[Project, np.ndarray, dict[int, str]]:
    """200 digits, all ten categories (an exclusive, exhaustive group) labeled from the truth,
    except 12 images made to conflict: 6 positive for a second digit, 6 negative for all ten."""
    targets = digits_project(directory, limit=200, digits=range(10), overrides={"cascade": {"budget": 50}})
    project = Project.open(directory)
    with project.store.session() as session:
        uris = {int(item): str(uri) for item, uri in session.execute(select(Item.id, Item.uri))}
        with_gold = set(session.scalars(select(Gold.item_id)))
    digit = {item: int(targets[int(Path(uri).stem)]) for item, uri in uris.items()}
    truth = {(item, f"digit-{d}"): digit[item] == d for item in uris for d in range(10)}
    chosen = [item for item in sorted(uris) if item not in with_gold][:12]
    for item in chosen[:6]:
        truth[(item, f"digit-{(digit[item] + 1) % 10}")] = True
    for item in chosen[6:]:
        truth[(item, f"digit-{digit[item]}")] = False
    label_from_truth(project.store, truth, set())
    return project, targets, {item: f"digit-{digit[item]}" for item in chosen}


def test_conflicts_are_held_back_then_settled_by_the_crowd_in_the_run(tmp_path: Path) -> None:
    project, _, conflicted = conflicted_digits_project(tmp_path / "project")
    (group,) = project.config.project.groups
    assert (group.name, group.exhaustive, len(group.categories)) == ("digits", True, 10)
    before = multilabel_status(project.store, [group])
    assert (before.positive_in_several, before.conflicts) == (6, {"digits": 12})
    # Every image is exported; a conflicted one is unlabeled in its group, saying why.
    summary = export_labels(project.store, tmp_path / "before.jsonl", "multilabel", [group])
    assert (summary.records, summary.held_back) == (200, {"digits": 12})
    images = [json.loads(line) for line in (tmp_path / "before.jsonl").read_text().splitlines()]
    held = [image for image in images if any(label["reason"] == "conflict" for label in image["labels"].values())]
    assert len(held) == 12 and all(
        label["label"] == "unlabeled" and label["reason"] == "conflict"
        for image in held
        for label in image["labels"].values()
    )
    per_category = export_labels(project.store, tmp_path / "before-flat.jsonl", "jsonl", [group])
    assert (per_category.records, per_category.held_back) == (2000, {"digits": 12})
    flat = [json.loads(line) for line in (tmp_path / "before-flat.jsonl").read_text().splitlines()]
    assert sum(record["reason"] == "conflict" for record in flat) == 120

    # Every category is resolved (nothing left in its pool), so the run goes straight to the conflicts.
    outcomes = project.cascade(project.crowd()).run()
    assert {outcome.reason for outcome in outcomes} == {Outcome.RESOLVED}
    with project.store.session() as session:
        jobs = session.execute(select(Job.kind, Job.state, Job.round_id, Job.assignments_per_hit)).all()
        settled = session.scalars(select(GroupJob)).all()
        answers = session.scalars(select(ChoiceVote.choices)).all()
        events = session.execute(
            select(LabelEvent.item_id, LabelEvent.reason).where(LabelEvent.origin.like("conflict:%"))
        ).all()
        labels = {
            (item, name): label
            for item, name, label in session.execute(
                select(Label.item_id, Category.name, Label.label).join(Category, Category.id == Label.category_id)
            )
        }
    assert jobs[0] == (JobKind.REPAIR, JobState.REVIEWED, None, 3)
    assert settled[0].group_name == "digits" and settled[0].resolved + settled[0].unresolved == 12
    assert len(answers) >= 30 and all(json.loads(answer) is not None for answer in answers)
    right = [
        item
        for item, name in conflicted.items()
        if all(
            labels[(item, f"digit-{d}")] == int(f"digit-{d}" == name)
            for d in range(10)
            if (item, f"digit-{d}") in labels
        )
    ]
    assert len(right) >= 10, f"{len(right)} of 12 conflicts settled on the true digit"
    assert events and all(reason.startswith("conflict in group digits: ") for _, reason in events)
    assert any("positive for digit-" in reason for _, reason in events)
    assert any("negative for all 10 categories" in reason for _, reason in events)
    after = multilabel_status(project.store, [group])
    assert after.conflicts["digits"] <= 12 - len(right)
    assert (
        export_labels(project.store, tmp_path / "after.jsonl", "multilabel", [group]).held_back["digits"]
        == (after.conflicts["digits"])
    )
    project.close()


def test_the_conflicts_command_settles_them_and_status_counts_them(tmp_path: Path) -> None:
    directory = tmp_path / "project"
    project, _, _ = conflicted_digits_project(directory)
    project.close()
    runner = CliRunner()
    status = runner.invoke(app, ["status", "--project", str(directory)])
    assert status.exit_code == 0, status.output
    assert "two or more categories" not in status.output  # a pass over every label: asked for only
    status = runner.invoke(app, ["status", "--project", str(directory), "--overlaps"])
    assert status.exit_code == 0, status.output
    assert "images positive in two or more categories: 6" in status.output
    assert "group digits: 12 image(s) in conflict" in status.output
    result = runner.invoke(app, ["conflicts", "--project", str(directory)])
    assert result.exit_code == 0, result.output
    assert "group digits: done; " in result.output and " settled by people" in result.output
    project = Project.open(directory)
    (group,) = project.config.project.groups
    with project.store.session() as session:
        settled = int(session.scalar(select(func.sum(GroupJob.resolved))) or 0)
    assert settled >= 10 and multilabel_status(project.store, [group]).conflicts["digits"] <= 12 - settled + 2
    exported = runner.invoke(
        app, ["export", "--project", str(directory), "--out", str(tmp_path / "m.csv"), "--format", "multilabel"]
    )
    assert exported.exit_code == 0 and "wrote " in exported.output
    project.close()
