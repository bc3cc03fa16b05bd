"""Coverage of the audit's intervals: many seeded audits of ONE finished simulated project.

The project is run once (the demo's digits with the simulated crowd, or with ``--synthetic`` a
store of final labels written directly, whose confidences are calibrated by construction), then
audited again and again with different seeds, each audit on a fresh copy of the finished store
and crowd state (so no audit's workers are kept off the next one). The simulation's truth gives
each figure's true value; the script prints, per interval kind, how often the 95% intervals
contained it and their average widths.

    .venv/bin/python benchmarks/audit_coverage.py --audits 100 --sample 300
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
from sqlalchemy import select

from lsun_crowd.audit.run import ALL, Figure, run_audit
from lsun_crowd.audit.sample import stratum_name
from lsun_crowd.ledger import NewLabel, record_labels
from lsun_crowd.project import Project
from lsun_crowd.schema import Category, Gold, Item, Label, LabelSource
from lsun_crowd.store import category_id
from lsun_crowd.testing import digits_project, write_project

GOLD = 40  # gold images per category of the synthetic project
STATE_FILES = ("lsun-crowd.db", "mock-crowd.sqlite", "lsun-crowd.toml", "truth.csv", "gold.csv")


def finished_digits_project(directory: Path, limit: int, digits: int) -> None:
    """Run the demo's cascade once on ``limit`` digit images and ``digits`` categories."""
    if (directory / "lsun-crowd.db").exists():
        return
    digits_project(directory, limit=limit, digits=range(digits), sample_per_round=150)
    project = Project.open(directory)
    try:
        project.cascade(project.crowd()).run()
    finally:
        project.close()


def synthetic_labeled_project(directory: Path, items: int = 1500, seed: int = 0) -> None:
    """A finished project written directly: two categories, 20% positives, 80% of labels by the
    model and 20% by people, each label right with probability ``labels.confidence``; the mock
    crowd's workers have no record yet, and each audit HIT hides one of :data:`GOLD` gold images."""
    if (directory / "lsun-crowd.db").exists():
        return
    categories = ["cat-a", "cat-b"]
    write_project(
        directory,
        {
            "project": {"name": "audit-bench", "seed": seed, "categories": categories},
            "crowd": {
                "adapter": "mock",
                "items_per_hit": 6,
                "gold_per_hit": 1,
                "reward_per_assignment": Decimal("0.01"),
                "poll_seconds": 0,
                "settings": {"seed": seed, "truth_file": "truth.csv"},
            },
            "cascade": {"budget": 100000},
        },
    )
    generator = np.random.default_rng(seed)
    project = Project.open(directory)
    try:
        with project.store.session() as session:
            session.add_all(
                Item(
                    id=number + 1,
                    sha256=hashlib.sha256(str(number).encode()).hexdigest(),
                    uri=f"/synthetic/{number}.png",
                    width=8,
                    height=8,
                )
                for number in range(items + GOLD)
            )
        rows = []
        with project.store.session() as session:
            for name in categories:
                cid = category_id(session, name)
                truth = generator.random(items) < 0.2
                by_model = generator.random(items) < 0.8
                # Errors: model labels wrong 1-10% of the time, people's 1-3%, calibrated.
                wrong_chance = np.where(by_model, generator.beta(1, 25, items), generator.beta(1, 60, items))
                right = generator.random(items) >= wrong_chance
                labels = np.where(right, truth, ~truth)
                for source in (LabelSource.MODEL, LabelSource.HUMAN):
                    chosen = np.flatnonzero(by_model == (source == LabelSource.MODEL))
                    record_labels(
                        session,
                        cid,
                        [NewLabel(int(i) + 1, int(labels[i]), float(1 - wrong_chance[i])) for i in chosen],
                        source=source,
                        origin=f"synthetic:{source}",
                    )
                rows += [(f"/synthetic/{i}.png", name, int(truth[i])) for i in range(items)]
                # Gold the audit's HITs hide, so its workers' answers can be weighed.
                session.add_all(Gold(item_id=items + g + 1, category_id=cid, answer=g % 2) for g in range(GOLD))
                rows += [(f"/synthetic/{items + g}.png", name, g % 2) for g in range(GOLD)]
    finally:
        project.close()
    with (directory / "truth.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "category", "label"])
        writer.writerows(rows)


def true_values(directory: Path) -> dict[tuple[str | None, str, str], float]:
    """Every figure's value against the simulation's truth."""
    with (directory / "truth.csv").open(newline="") as handle:
        truth = {(row["uri"], row["category"]): row["label"] == "1" for row in csv.DictReader(handle)}
    project = Project.open(directory)
    try:
        with project.store.session() as session:
            rows = session.execute(
                select(Category.name, Item.uri, Label.source, Label.label)
                .join(Category, Category.id == Label.category_id)
                .join(Item, Item.id == Label.item_id)
                .where(Label.source.in_([LabelSource.HUMAN, LabelSource.MODEL]))
            ).all()
    finally:
        project.close()
    right: dict[tuple[str | None, str], list[int]] = defaultdict(lambda: [0, 0])
    counts: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])  # true positives, false negatives
    for category, uri, source, label in rows:
        correct = int(truth[(uri, category)] == bool(label))
        stratum = stratum_name(source, label)
        side = "positive" if label else "negative"
        for scope in (category, None):
            for key in ((scope, stratum), (scope, side)):
                right[key][0] += correct
                right[key][1] += 1
            if truth[(uri, category)]:
                counts[scope][0 if label else 1] += 1
    values: dict[tuple[str | None, str, str], float] = {}
    for (scope, key), (good, total) in right.items():
        if key in ("positive", "negative"):
            values[(scope, ALL, "precision" if key == "positive" else "npv")] = good / total
        else:
            values[(scope, key, "precision" if key.endswith("positive") else "npv")] = good / total
    for scope, (tp, fn) in counts.items():
        values[(scope, ALL, "recall")] = tp / (tp + fn) if tp + fn else 1.0
    return values


@dataclass
class Tally:
    covered: int = 0
    total: int = 0
    width: float = 0.0

    def add(self, low: float, high: float, value: float) -> None:
        self.covered += int(low - 1e-12 <= value <= high + 1e-12)
        self.total += 1
        self.width += high - low

    @property
    def coverage(self) -> float:
        return self.covered / self.total if self.total else float("nan")

    @property
    def mean_width(self) -> float:
        return self.width / self.total if self.total else float("nan")


def audit_once(finished: Path, sample: int, seed: int, votes: int) -> list[Figure]:
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch)
        for name in STATE_FILES:
            if (finished / name).exists():
                shutil.copy2(finished / name, copy / name)
        project = Project.open(copy)
        try:
            return run_audit(
                project.config,
                project.store,
                project.crowd(),
                sample=sample,
                seed=seed,
                votes=votes,
                sleep=lambda _: None,
            ).figures
        finally:
            project.close()


def coverage(finished: Path, audits: int, sample: int, votes: int = 5, first_seed: int = 0) -> dict[str, object]:
    values = true_values(finished)
    exact, ppi = Tally(), Tally()
    by_kind: dict[str, tuple[Tally, Tally]] = defaultdict(lambda: (Tally(), Tally()))
    both = 0  # figures with both intervals, where the widths are compared
    exact_width = ppi_width = 0.0
    started = time.perf_counter()
    for seed in range(first_seed, first_seed + audits):
        for figure in audit_once(finished, sample, seed, votes):
            value = values[(figure.category, figure.stratum, figure.metric)]
            kind = f"{'overall' if figure.category is None else 'category'} {figure.stratum} {figure.metric}"
            exact.add(figure.exact.low, figure.exact.high, value)
            by_kind[kind][0].add(figure.exact.low, figure.exact.high, value)
            if figure.ppi is not None:
                ppi.add(figure.ppi.low, figure.ppi.high, value)
                by_kind[kind][1].add(figure.ppi.low, figure.ppi.high, value)
                both += 1
                exact_width += figure.exact.high - figure.exact.low
                ppi_width += figure.ppi.high - figure.ppi.low
    return {
        "exact": exact,
        "ppi": ppi,
        "by_kind": dict(by_kind),
        "exact_width_paired": exact_width / both if both else float("nan"),
        "ppi_width_paired": ppi_width / both if both else float("nan"),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audits", type=int, default=100)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--votes", type=int, default=5)
    parser.add_argument("--synthetic", action="store_true", help="labels written directly instead of a cascade")
    parser.add_argument("--limit", type=int, default=1000, help="digit images of the cascade")
    parser.add_argument("--digits", type=int, default=2, help="categories of the cascade")
    parser.add_argument("--project", type=Path, default=None, help="where the finished project is kept")
    args = parser.parse_args()
    where = args.project or Path(tempfile.mkdtemp(prefix="audit-coverage-"))
    started = time.perf_counter()
    if args.synthetic:
        synthetic_labeled_project(where)
    else:
        finished_digits_project(where, args.limit, args.digits)
    built = time.perf_counter() - started
    result = coverage(where, args.audits, args.sample, args.votes)
    exact, ppi = result["exact"], result["ppi"]
    assert isinstance(exact, Tally) and isinstance(ppi, Tally)
    source = "synthetic labels" if args.synthetic else f"digits cascade ({args.limit} images, {args.digits} categories)"
    print(
        f"project: {source}, built in {built:.0f} s; "
        f"{args.audits} audits of {args.sample} labels, {args.votes} votes each"
    )
    print(f"{'interval':<10} {'figures':>8} {'coverage':>9} {'mean width':>11}")
    print(f"{'exact':<10} {exact.total:>8} {exact.coverage:>9.3f} {exact.mean_width:>11.4f}")
    print(f"{'PPI++':<10} {ppi.total:>8} {ppi.coverage:>9.3f} {ppi.mean_width:>11.4f}")
    print(
        f"where both exist: mean width exact {result['exact_width_paired']:.4f}, PPI++ {result['ppi_width_paired']:.4f}"
    )
    print(f"\n{'figure':<40} {'exact cov':>9} {'width':>7} {'PPI++ cov':>9} {'width':>7}")
    by_kind = result["by_kind"]
    assert isinstance(by_kind, dict)
    for kind, (e, p) in sorted(by_kind.items()):
        print(f"{kind:<40} {e.coverage:>9.3f} {e.mean_width:>7.3f} {p.coverage:>9.3f} {p.mean_width:>7.3f}")
    print(f"\naudits took {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
