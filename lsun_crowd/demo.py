"""``lsun-crowd demo``: the LSUN cascade on scikit-learn's real digit images, with a simulated crowd.

The pool is ``load_digits()`` (1,797 real 8×8 scans) written as PNG files. Each digit is one
category. Because the crowd is simulated from the true digits, every figure printed here can be
checked against ``load_digits().target``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits
from sqlalchemy import func, select

from lsun_crowd import ledger
from lsun_crowd.certificate import certificates
from lsun_crowd.config import CONFIG_FILE
from lsun_crowd.export import export_labels
from lsun_crowd.ingest import ingest, ingest_gold
from lsun_crowd.progress import RichCascadeProgress, progress_bars
from lsun_crowd.project import Project
from lsun_crowd.schema import Category, Gold, Item, Label, LabelSource, Vote
from lsun_crowd.store import Store

GOLD_PER_CLASS = 10


FIXED_REDUNDANCY = "votes_per_item = 3\nmax_votes_per_item = 3\n"


def demo_config(
    seed: int, digits: range = range(10), extra: str = "", redundancy: str = "", humans_below: int = 60
) -> str:
    """The demo project's configuration; ``redundancy`` holds [crowd] lines that replace the
    default adaptive redundancy, e.g. :data:`FIXED_REDUNDANCY`."""
    categories = ", ".join(f'"digit-{digit}"' for digit in digits)
    # Every image is exactly one digit: with all ten, they form an exclusive, exhaustive group.
    group = (
        f'\n[[project.groups]]\nname = "digits"\ncategories = [{categories}]\nexhaustive = true\n'
        if list(digits) == list(range(10))
        else ""
    )
    return (
        f"""\
# Written by `lsun-crowd demo`: the digits pool with a simulated crowd.
[project]
name = "digits-demo"
seed = {seed}
categories = [{categories}]
{group}
[crowd]
adapter = "mock"
{redundancy}items_per_hit = 10
gold_per_hit = 1
reward_per_assignment = 0.02
poll_seconds = 0

[crowd.settings]
seed = {seed}
truth_file = "truth.csv"

[model]
backbone = "pixels"
image_size = 8

[cascade]
finish_with_humans_below = {humans_below}
budget = 500
"""
        + extra
    )


def write_pool(out: Path, seed: int, limit: int | None = None, digits: range = range(10)) -> np.ndarray:
    """Write the digits as PNGs, the simulated crowd's truth and a small requester-labeled gold set."""
    dataset = load_digits()
    images = dataset.images[:limit]
    targets = dataset.target[:limit]
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    for index, pixels in enumerate(images):
        image_path = (images_dir / f"{index:05d}.png").resolve()
        if not image_path.exists():
            Image.fromarray((pixels * 255 / 16).round().astype(np.uint8), mode="L").save(image_path)
        paths.append(str(image_path))
    with (out / "truth.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "category", "label"])
        for path, target in zip(paths, targets, strict=True):
            writer.writerows([path, f"digit-{digit}", int(target == digit)] for digit in digits)
    rng = np.random.default_rng(seed)
    with (out / "gold.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "category", "label"])
        for digit in digits:
            for label in (1, 0):
                members = np.flatnonzero((targets == digit) == bool(label))
                for index in rng.choice(members, size=GOLD_PER_CLASS, replace=False):
                    writer.writerow([paths[index], f"digit-{digit}", label])
    return np.asarray(targets)


@dataclass(frozen=True)
class CategoryScore:
    category: str
    true_positive: int
    false_positive: int
    false_negative: int
    unlabeled: int
    resolved: int
    votes: int

    @classmethod
    def combine(cls, name: str, scores: list[CategoryScore]) -> CategoryScore:
        return cls(
            name,
            *(
                sum(getattr(score, field) for score in scores)
                for field in ("true_positive", "false_positive", "false_negative", "unlabeled", "resolved", "votes")
            ),
        )

    @property
    def votes_per_resolved(self) -> float:
        return self.votes / max(self.resolved, 1)

    @property
    def unlabeled_share(self) -> float:
        return self.unlabeled / max(self.unlabeled + self.resolved, 1)

    @property
    def precision(self) -> float:
        return self.true_positive / max(self.true_positive + self.false_positive, 1)

    @property
    def recall(self) -> float:
        return self.true_positive / max(self.true_positive + self.false_negative, 1)


def shows_digit(targets: np.ndarray, uri: str, category: str) -> bool:
    """Whether the demo image at ``uri`` (named by its index) is the digit of ``category``."""
    return bool(targets[int(Path(uri).stem)] == int(category.split("-")[1]))


def score_export(path: Path, targets: np.ndarray) -> list[CategoryScore]:
    """Precision and recall of the exported positives against the true digits."""
    tallies: dict[str, list[int]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        truth = shows_digit(targets, record["uri"], record["category"])
        tally = tallies.setdefault(record["category"], [0] * 6)
        label = record["label"]
        if label == "positive":
            tally[0 if truth else 1] += 1
        elif label == "negative" and truth:
            tally[2] += 1
        elif label == "unlabeled":
            tally[3] += 1
            if truth:
                tally[2] += 1
        tally[4] += label != "unlabeled"
        tally[5] += int(record["votes"])
    return [CategoryScore(name, *values) for name, values in sorted(tallies.items())]


COMPARISON_IMAGES = 300


@dataclass(frozen=True)
class HumanLabeling:
    """Humans alone labeling the same images under one redundancy policy, to completion."""

    pairs: int  # (image, category) pairs to label
    labeled: int
    wrong: int
    votes: int  # on the pairs, gold not counted
    spent: Decimal

    @property
    def accuracy(self) -> float:
        return 1 - self.wrong / max(self.labeled, 1)


@dataclass(frozen=True)
class DemoRun:
    scores: list[CategoryScore]
    spent: Decimal
    humans: HumanLabeling

    @property
    def total(self) -> CategoryScore:
        return CategoryScore.combine("all", self.scores)


def run_demo(
    out: Path, seed: int = 0, console: Console | None = None, compare: bool = True, extra: str = ""
) -> tuple[DemoRun, dict[str, HumanLabeling]]:
    """The demo project in ``out``, then (with ``compare``) adaptive against fixed redundancy.
    ``extra`` configuration applies to the first (e.g. ``[quality]`` lines, for benchmarks)."""
    console = console or Console()
    run = run_project(out, seed, console, extra=extra)
    print_scores(console, run.scores, run.spent)
    comparison = compare_redundancy(out / "redundancy", seed, console) if compare else {}
    return run, comparison


def compare_redundancy(out: Path, seed: int, console: Console) -> dict[str, HumanLabeling]:
    """The first :data:`COMPARISON_IMAGES` digits, every category, labeled by humans alone until
    done (rounds re-ask what is still uncertain), once with adaptive and once with fixed
    redundancy: same images, same crowd, same label bar."""
    console.print(f"adaptive against fixed redundancy: humans alone label the first {COMPARISON_IMAGES} digits")
    policies = {"adaptive, 2 to 5 votes": "", "fixed, 3 votes": FIXED_REDUNDANCY}
    results = {}
    for number, (name, redundancy) in enumerate(policies.items()):
        directory = out / f"policy-{number}"
        results[name] = run_project(directory, seed, console, redundancy, COMPARISON_IMAGES).humans
    print_comparison(console, results)
    return results


def run_project(
    out: Path, seed: int, console: Console, redundancy: str = "", humans_only_on: int | None = None, extra: str = ""
) -> DemoRun:
    """The demo project in ``out``; with ``humans_only_on``, only that many images, all labeled by
    the crowd. ``extra`` is appended to its configuration (whole sections, e.g. ``[quality]``)."""
    out.mkdir(parents=True, exist_ok=True)
    targets = write_pool(out, seed, humans_only_on)
    humans_below = humans_only_on or 60
    (out / CONFIG_FILE).write_text(demo_config(seed, extra=extra, redundancy=redundancy, humans_below=humans_below))
    project = Project.open(out)
    report = ingest(project.store, [out / "images"], out / "downloads")
    ingest_gold(project.store, out / "gold.csv")
    console.print(
        f"pool: {report.added} new image(s) from scikit-learn's load_digits(), "
        f"{report.duplicates} already ingested or duplicate, {len(report.rejected)} rejected"
    )
    with progress_bars(console) as bars:
        cascade = project.cascade(project.crowd(), RichCascadeProgress(bars), bars)
        cascade.run()
    if humans_only_on is None:
        print_guarantees(console, project)
    held_back = export_labels(project.store, out / "export.jsonl", groups=project.config.project.groups).describe()
    if held_back:
        console.print(held_back)
    run = DemoRun(
        score_export(out / "export.jsonl", targets), cascade.spent(), score_human_labeling(project.store, targets)
    )
    project.close()
    return run


def print_guarantees(console: Console, project: Project) -> None:
    """What each category's auto-labels were certified to meet (:mod:`lsun_crowd.certificate`)."""
    with project.store.session() as session:
        found = certificates(session, project.config.project.categories)
    for certificate in found:
        console.print(f"guarantee: {certificate.describe()}")
    if not any(certificate.auto_positive or certificate.auto_negative for certificate in found):
        cascade = project.config.cascade
        console.print(
            f"the model labeled nothing: to prove precision {cascade.target_precision:g} and NPV "
            f"{cascade.target_npv:g} at confidence {cascade.confidence:g}, certification had to check nearly every "
            "label the model proposed in categories of about 180 digits each, so people labeled them instead "
            "(it pays from a few thousand images a category: docs/guarantees.md)"
        )


def score_human_labeling(store: Store, targets: np.ndarray) -> HumanLabeling:
    """The crowd's labels (gold aside) against the true digits, and the votes and money they took."""
    with store.session() as session:
        labels = session.execute(
            select(Item.uri, Category.name, Label.label)
            .join(Label, Label.item_id == Item.id)
            .join(Category, Category.id == Label.category_id)
            .where(Label.source == LabelSource.HUMAN)
        ).all()
        categories = session.scalar(select(func.count(Category.id))) or 0
        items = session.scalar(select(func.count(Item.id)).where(Item.problem.is_(None))) or 0
        gold = session.scalar(select(func.count(Gold.id))) or 0
        votes = session.scalar(select(func.count(Vote.id)).where(Vote.is_gold.is_(False))) or 0
        spent = ledger.spent(session)
    wrong = sum(shows_digit(targets, uri, category) != bool(label) for uri, category, label in labels)
    return HumanLabeling(items * categories - gold, len(labels), wrong, votes, Decimal(spent or 0))


def print_comparison(console: Console, results: dict[str, HumanLabeling]) -> None:
    table = Table(
        "redundancy",
        "images × categories",
        "labeled",
        "label accuracy",
        "votes",
        "votes / label",
        "spent (USD)",
        title="humans alone, same images, same crowd, same label bar",
    )
    for name, result in results.items():
        table.add_row(
            name,
            str(result.pairs),
            str(result.labeled),
            f"{result.accuracy:.4f} ({result.wrong} wrong)",
            str(result.votes),
            f"{result.votes / max(result.labeled, 1):.3f}",
            f"{result.spent:.2f}",
        )
    console.print(table)


def print_scores(console: Console, scores: list[CategoryScore], spent: Decimal) -> None:
    table = Table(
        "category",
        "precision",
        "recall",
        "unlabeled",
        "votes",
        "votes / resolved image",
        title="demo results against the true digits",
    )
    for score in scores:
        table.add_row(
            score.category,
            f"{score.precision:.3f}",
            f"{score.recall:.3f}",
            str(score.unlabeled),
            str(score.votes),
            f"{score.votes_per_resolved:.3f}",
        )
    total = CategoryScore.combine("all", scores)
    table.add_row(
        "all",
        f"{total.precision:.3f}",
        f"{total.recall:.3f}",
        f"{total.unlabeled} ({total.unlabeled_share:.1%})",
        str(total.votes),
        f"{total.votes_per_resolved:.3f}",
        style="bold",
    )
    console.print(table)
    console.print(f"spent {spent} USD on the simulated crowd; labels in export.jsonl")
