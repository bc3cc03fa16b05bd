"""``lsun-crowd demo``: the LSUN cascade on scikit-learn's real digit images, with a simulated crowd.

The pool is ``load_digits()`` (1,797 real 8×8 scans) written as PNG files. Each digit is one
category. Because the crowd is simulated from the true digits, every figure printed here can be
checked against ``load_digits().target``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits

from lsun_crowd.cli import RichCascadeProgress, progress_bars
from lsun_crowd.config import CONFIG_FILE
from lsun_crowd.export import export
from lsun_crowd.ingest import ingest, ingest_gold
from lsun_crowd.project import Project

GOLD_PER_CLASS = 10


def demo_config(seed: int, digits: range = range(10), extra: str = "") -> str:
    categories = ", ".join(f'"digit-{digit}"' for digit in digits)
    return (
        f"""\
# Written by `lsun-crowd demo`: the digits pool with a simulated crowd.
[project]
name = "digits-demo"
seed = {seed}
categories = [{categories}]

[crowd]
adapter = "mock"
votes_per_item = 3
items_per_hit = 10
gold_per_hit = 1
reward_per_assignment = 0.02
poll_seconds = 0

[crowd.settings]
seed = {seed}
truth_file = "truth.csv"

[model]
backbone = "pixels"
image_size = 8
hidden_units = 128
epochs = 150

[cascade]
sample_per_round = 300
finish_with_humans_below = 60
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


def score_export(path: Path, targets: np.ndarray) -> list[CategoryScore]:
    """Precision and recall of the exported positives against the true digits."""
    tallies: dict[str, list[int]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        index = int(Path(record["uri"]).stem)
        digit = int(record["category"].split("-")[1])
        truth = targets[index] == digit
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


def run_demo(out: Path, seed: int = 0, console: Console | None = None) -> list[CategoryScore]:
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    targets = write_pool(out, seed)
    (out / CONFIG_FILE).write_text(demo_config(seed))
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
    export(project.store, out / "export.jsonl")
    scores = score_export(out / "export.jsonl", targets)
    print_scores(console, scores, cascade.spent())
    project.close()
    return scores


def print_scores(console: Console, scores: list[CategoryScore], spent: object) -> None:
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
