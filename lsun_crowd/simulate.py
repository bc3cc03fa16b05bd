"""``lsun-crowd simulate``: the real store, runner, aggregation, splitter and simulated crowd on a
synthetic pool, with figures for every round.

The pool (:mod:`lsun_crowd.synthetic`) has a known truth, so each round's labels are checked
against it: precision and recall of the positives (recall over every positive of the pool, so an
image left unlabeled counts as missed), the share left unlabeled, and human votes per resolved
image. Every stage's wall time and peak memory come from :mod:`lsun_crowd.stages`. The project it
leaves behind is a real one: ``status``, ``export`` and ``report`` work on it.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from lsun_crowd import toml_writer
from lsun_crowd.config import CONFIG_FILE, CascadeConfig
from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.loop import Cascade
from lsun_crowd.progress import Progress
from lsun_crowd.project import Project
from lsun_crowd.runner import CategoryOutcome
from lsun_crowd.schema import Category, Gold, Item, Label, LabelCount, Round, RoundState, Vote
from lsun_crowd.stages import STAGES, StageFigure, Stages, peak_bytes
from lsun_crowd.synthetic import SyntheticPool, build

RECIPE = "synthetic-pool.json"
CHUNK = 100_000


@dataclass(frozen=True)
class Settings:
    items: int = 100_000
    categories: int = 1
    positive_rate: float = 0.1
    dim: int = 16
    seed: int = 0
    separation: float = 6.0
    ambiguous: float = 0.002
    rounds: int = 10
    sample: int = 0  # images a round sends to people; 0: the default of `lsun-crowd init`
    database_url: str = ""
    target_recall: float | None = None  # None: the cascade's default

    def pool(self) -> SyntheticPool:
        names = tuple(f"c{index}" for index in range(self.categories))
        return SyntheticPool(
            self.items,
            names,
            dim=self.dim,
            positive_rate=self.positive_rate,
            separation=self.separation,
            seed=self.seed,
            ambiguous=self.ambiguous,
        )

    def sample_per_round(self) -> int:
        """Images a round sends to people: ``--sample``, or the default of ``lsun-crowd init``."""
        return self.sample or CascadeConfig().sample_per_round


@dataclass
class Quality:
    """A category's labels against the truth, at one moment."""

    positives: int = 0  # in the pool, by the truth
    labeled_positive: int = 0
    true_positive: int = 0
    labeled: int = 0
    votes: int = 0

    def precision(self) -> float:
        return self.true_positive / self.labeled_positive if self.labeled_positive else 1.0

    def recall(self) -> float:
        return self.true_positive / self.positives if self.positives else 1.0


@dataclass
class RoundFigures:
    category: str
    round: int
    quality: Quality
    items: int
    stages: dict[str, StageFigure] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        quality = self.quality
        return {
            "category": self.category,
            "round": self.round,
            "precision": round(quality.precision(), 4),
            "recall": round(quality.recall(), 4),
            "unlabeled": round(1 - quality.labeled / self.items, 4),
            "votes": quality.votes,
            "votes_per_resolved": round(quality.votes / max(quality.labeled, 1), 4),
            "stages": {name: asdict(figure) for name, figure in self.stages.items()},
        }


def quality(project: Project, pool: SyntheticPool, category: str) -> Quality:
    """The category's current labels (gold included) against the truth, streamed in chunks."""
    index = pool.categories.index(category)
    result = Quality()
    for numbers in pool.chunks():
        result.positives += int(pool.truth_matrix(numbers)[:, index].sum())
    with project.store.session() as session:
        cat_id = session.scalar(select(Category.id).where(Category.name == category))
        if cat_id is None:
            return result
        result.votes = int(session.scalar(select(func.count(Vote.id)).where(Vote.category_id == cat_id)) or 0)
        for table, column in ((Label, Label.label), (Gold, Gold.answer)):
            after = -1
            while True:
                rows = session.execute(
                    select(table.item_id, Item.uri, column)
                    .join(Item, Item.id == table.item_id)
                    .where(table.category_id == cat_id, table.item_id > after)
                    .order_by(table.item_id)
                    .limit(CHUNK)
                ).all()
                if not rows:
                    break
                after = rows[-1][0]
                numbers = np.fromiter((pool.number(uri) for _, uri, _ in rows), dtype=np.int64, count=len(rows))
                labels = np.fromiter((label for _, _, label in rows), dtype=np.int8, count=len(rows))
                truth = pool.truth_matrix(numbers)[:, index]
                result.labeled += len(rows)
                result.labeled_positive += int((labels == 1).sum())
                result.true_positive += int(((labels == 1) & truth).sum())
    return result


def write_config(directory: Path, settings: Settings) -> None:
    pool = settings.pool()
    values = {
        "project": {
            "name": "simulation",
            "seed": settings.seed,
            "categories": list(pool.categories),
            **({"database_url": settings.database_url} if settings.database_url else {}),
        },
        "crowd": {
            "adapter": "mock",
            "poll_seconds": 0,
            "reward_per_assignment": 0.01,
            # The images people find hard are as rare as those the model cannot tell.
            "settings": {
                "truth_file": RECIPE,
                "seed": settings.seed,
                "balance": 1_000_000,
                "ambiguous_fraction": settings.ambiguous,
            },
        },
        "cascade": {
            "sample_per_round": settings.sample_per_round(),
            "budget": 1_000_000,
            "max_rounds": settings.rounds,
            **({"target_recall": settings.target_recall} if settings.target_recall is not None else {}),
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(toml_writer.dumps(values), encoding="utf-8")
    pool.save(directory / RECIPE)


@dataclass
class Simulation:
    settings: Settings
    directory: Path
    build_seconds: float = 0.0
    build_peak_bytes: int = 0
    seconds: float = 0.0
    rounds: list[RoundFigures] = field(default_factory=list)
    final: dict[str, Quality] = field(default_factory=dict)
    outcomes: list[CategoryOutcome] = field(default_factory=list)
    stage_totals: dict[str, StageFigure] = field(default_factory=dict)
    labels_by_source: dict[str, int] = field(default_factory=dict)  # current labels: human, model

    def summary(self) -> dict[str, Any]:
        labeled = sum(q.labeled for q in self.final.values())
        votes = sum(q.votes for q in self.final.values())
        positives = sum(q.labeled_positive for q in self.final.values())
        right = sum(q.true_positive for q in self.final.values())
        every_positive = sum(q.positives for q in self.final.values())
        pairs = self.settings.items * self.settings.categories
        return {
            "settings": asdict(self.settings),
            "directory": str(self.directory),
            "build_seconds": round(self.build_seconds, 2),
            "build_peak_mb": round(self.build_peak_bytes / 2**20),
            "cascade_seconds": round(self.seconds, 2),
            "peak_mb": round(peak_bytes() / 2**20),
            "precision": round(right / positives if positives else 1.0, 4),
            "recall": round(right / every_positive if every_positive else 1.0, 4),
            "unlabeled": round(1 - labeled / pairs, 4),
            "votes": votes,
            "votes_per_resolved": round(votes / max(labeled, 1), 4),
            "labels": dict(self.labels_by_source),
            "outcomes": [f"{o.category}: {o.reason} after {o.rounds} round(s)" for o in self.outcomes],
            "rounds": [figures.row() for figures in self.rounds],
            "stages": {name: asdict(figure) for name, figure in self.stage_totals.items()},
        }


def simulate(
    settings: Settings,
    directory: Path | None = None,
    progress: Progress | None = None,
    on_round: Callable[[RoundFigures], None] | None = None,
) -> Simulation:
    """Build the pool and run the cascade on it to the end, measuring every round."""
    directory = directory or Path(tempfile.mkdtemp(prefix="lsun-crowd-simulation-"))
    write_config(directory, settings)
    pool = settings.pool()
    project = Project.open(directory)
    result = Simulation(settings, directory)
    try:
        started = time.perf_counter()
        cache = EmbeddingCache(directory / "cache" / f"synthetic-{pool.dim}", pool.dim)
        build(pool, project.store, cache)
        result.build_seconds = time.perf_counter() - started
        result.build_peak_bytes = peak_bytes()
        crowd = project.crowd()
        cascade = Cascade(project.config, project.store, crowd, lambda: cache, progress)
        stages = Stages(enabled=True)
        cascade.context.stages = stages
        reported: dict[str, int] = {}

        def report_finished_rounds() -> None:
            with project.store.session() as session:
                done = session.execute(
                    select(Category.name, func.max(Round.number))
                    .join(Round, Round.category_id == Category.id)
                    .where(Round.state == RoundState.DONE)
                    .group_by(Category.name)
                ).all()
            for name, number in done:
                if number > reported.get(name, 0):
                    reported[name] = number
                    figures = RoundFigures(name, number, quality(project, pool, name), settings.items)
                    figures.stages = stages.of_round(number)
                    result.rounds.append(figures)
                    if on_round is not None:
                        on_round(figures)

        started = time.perf_counter()
        result.outcomes = cascade.runner().run(on_pass=report_finished_rounds)
        result.seconds = time.perf_counter() - started
        report_finished_rounds()
        result.stage_totals = stages.totals()
        result.final = {name: quality(project, pool, name) for name in pool.categories}
        with project.store.session() as session:
            counted = session.execute(select(LabelCount.source, func.sum(LabelCount.count)).group_by(LabelCount.source))
            result.labels_by_source = {str(source): int(count or 0) for source, count in counted}
    finally:
        project.close()
    return result


def stage_line(stages: dict[str, StageFigure]) -> str:
    shown = [name for name in STAGES if name in stages]
    return "  ".join(f"{name} {stages[name].seconds:.1f}s/{stages[name].peak_bytes / 2**20:.0f}MB" for name in shown)


def save_json(simulation: Simulation, path: Path) -> None:
    path.write_text(json.dumps(simulation.summary(), indent=2) + "\n", encoding="utf-8")
