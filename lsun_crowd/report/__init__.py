"""``lsun-crowd report``: an HTML page with PNG figures of where a project stands.

:mod:`~lsun_crowd.report.gather` reads the store as aggregates, :mod:`~lsun_crowd.report.scores`
scores bounded samples with each round's model, :mod:`~lsun_crowd.report.plots` draws the
figures and :mod:`~lsun_crowd.report.page` writes the page. The plots and the model stack load
when a report is written, never when this package is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lsun_crowd.project import Project

PLOTS = "plots"
INDEX = "index.html"


class ReportError(ValueError):
    """The report cannot be written where it was asked to go."""


@dataclass(frozen=True)
class WrittenReport:
    index: Path
    figures: int


def prepare_output(out: Path) -> Path:
    """``out`` made ready for the report, or :class:`ReportError` saying why it cannot be."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out}: is a file, not a directory")
    try:
        (out / PLOTS).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ReportError(f"--out {out}: cannot create the directory: {error.strerror or error}") from None
    if not os.access(out, os.W_OK | os.X_OK) or not os.access(out / PLOTS, os.W_OK | os.X_OK):
        raise ReportError(f"--out {out}: the directory is not writable")
    return out


def write_report(project: Project, out: Path) -> WrittenReport:
    from lsun_crowd.report import plots
    from lsun_crowd.report.gather import gather, rounds_by_category
    from lsun_crowd.report.page import Figures, render
    from lsun_crowd.report.scores import ScoreHistogram, round_histograms

    prepare_output(out)
    data = gather(project.store, project.config.project.categories)
    scores = round_histograms(
        project.store, project.config, project.directory, project.plugins, seed=project.config.project.seed
    )
    # Files are named by category id: a category's name may hold any character.
    ids = {c.category: c.category_id for c in data.categories}
    names = {c.category_id: c.category for c in data.categories}
    rounds = rounds_by_category(data.rounds)
    histograms: dict[str, list[ScoreHistogram]] = {}
    for histogram in scores.histograms:
        if histogram.category_id in names:
            histograms.setdefault(names[histogram.category_id], []).append(histogram)
    figures = Figures({}, {}, None, None, None)
    try:
        for category, rows in rounds.items():
            name = f"{PLOTS}/labels-{ids[category]}.png"
            plots.labels_per_round(category, rows, out / name)
            figures.labels[category] = name
        for category, panels in histograms.items():
            name = f"{PLOTS}/scores-{ids[category]}.png"
            plots.score_histograms(category, panels, out / name)
            figures.scores[category] = name
        if data.rounds:
            figures = replace(figures, work=f"{PLOTS}/work.png")
            plots.work_per_round(rounds, out / PLOTS / "work.png")
        if data.workers:
            figures = replace(figures, workers=f"{PLOTS}/workers.png")
            plots.worker_quality(data.workers, out / PLOTS / "workers.png")
        if data.audit.rows:
            combined = [row for row in data.audit.rows if row.stratum == "all"] or data.audit.rows
            figures = replace(figures, audit=f"{PLOTS}/audit.png")
            plots.audit_intervals(combined, out / PLOTS / "audit.png")
        page = render(project.config.project.name, data, figures, scores.note)
        partial = out / (INDEX + ".partial")
        partial.write_text(page, encoding="utf-8")
        partial.replace(out / INDEX)
    except OSError as error:
        raise ReportError(f"--out {out}: cannot write the report: {error.strerror or error}") from None
    count = (
        len(figures.labels)
        + len(figures.scores)
        + sum(x is not None for x in (figures.work, figures.workers, figures.audit))
    )
    return WrittenReport(out / INDEX, count)
