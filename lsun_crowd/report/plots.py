"""The report's figures as PNG files, drawn by matplotlib with the Agg backend.

matplotlib is imported on first use, so that no other command pays for it. Text from the project
(category names) goes through :func:`plain`, because matplotlib reads ``$`` as mathematics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lsun_crowd.ledger import WorkerRecord
from lsun_crowd.report.gather import AuditRow, RoundRow
from lsun_crowd.report.scores import GROUPS, PEOPLE_NEGATIVE, PEOPLE_POSITIVE, PEOPLE_UNRESOLVED, POOL, ScoreHistogram

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
COLORS = {
    "people positive": "#2b8a3e",
    "people negative": "#c92a2a",
    "model positive": "#8ce99a",
    "model negative": "#ffa8a8",
    POOL: "#adb5bd",
    PEOPLE_POSITIVE: "#2b8a3e",
    PEOPLE_NEGATIVE: "#c92a2a",
    PEOPLE_UNRESOLVED: "#f08c00",
}


def plain(text: str) -> str:
    """Project text as matplotlib shows it literally."""
    return text.replace("\\", "\\\\").replace("$", r"\$")


def _figure(width: float, height: float, layout: Literal["constrained"] | None = None, **margins: float) -> Figure:
    """A Figure of its own, not pyplot's global state: nothing is kept once the file is written.
    Fixed ``margins`` (fractions, as ``subplots_adjust`` takes them) unless a ``layout`` engine
    must fit long labels: an engine measures every text, which costs more than the drawing."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    if layout is None:
        figure.subplots_adjust(**({"left": 0.1, "right": 0.97, "bottom": 0.14, "top": 0.9} | margins))
    return figure


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, format="png")
    return path


def labels_per_round(category: str, rounds: Sequence[RoundRow], path: Path) -> Path:
    """Images each round resolved, stacked by who labeled them, and what was left unlabeled."""
    figure = _figure(7, 3.6)
    axes = figure.add_subplot()
    x = np.array([row.number for row in rounds])
    bottom = np.zeros(len(rounds))
    parts = {
        "people positive": [row.human_positive for row in rounds],
        "people negative": [row.human_negative for row in rounds],
        "model positive": [row.model_positive for row in rounds],
        "model negative": [row.model_negative for row in rounds],
    }
    for name, values in parts.items():
        axes.bar(x, values, bottom=bottom, color=COLORS[name], label=name, width=0.7)
        bottom += np.array(values)
    axes.plot(x, [row.unlabeled_after for row in rounds], "k.-", label="unlabeled after the round")
    axes.set_xlabel("round")
    axes.set_ylabel("images")
    axes.set_xticks(x)
    axes.set_title(plain(category))
    axes.legend(fontsize="small", loc="upper right")
    return _save(figure, path)


def score_histograms(category: str, histograms: Sequence[ScoreHistogram], path: Path) -> Path:
    """One panel per round: the pool sample and the round's people-labeled images by score, with
    the thresholds its split chose."""
    columns = min(len(histograms), 3)
    rows = math.ceil(len(histograms) / columns)
    figure = _figure(
        4.2 * columns,
        0.5 + 2.8 * rows,
        left=0.75 / (4.2 * columns),
        right=1 - 0.1 / (4.2 * columns),
        bottom=0.5 / (0.5 + 2.8 * rows),
        top=1 - 0.5 / (0.5 + 2.8 * rows),
        wspace=0.25,
        hspace=0.55,
    )
    panels = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for axes, histogram in zip(panels, histograms, strict=False):
        centers = (histogram.edges[:-1] + histogram.edges[1:]) / 2
        width = float(histogram.edges[1] - histogram.edges[0])
        pool = histogram.counts[POOL]
        shares = pool / max(int(pool.sum()), 1)
        axes.bar(centers, shares, width=width, color=COLORS[POOL], label=POOL)
        for group in GROUPS[1:]:
            counts = histogram.counts[group]
            if counts.sum():
                axes.step(centers, counts / max(int(counts.sum()), 1), where="mid", color=COLORS[group], label=group)
        for threshold, name in ((histogram.high_threshold, "high"), (histogram.low_threshold, "low")):
            if threshold is not None:
                axes.axvline(threshold, color="black", linestyle="--", linewidth=1)
                axes.annotate(name, (threshold, 1), xycoords=("data", "axes fraction"), fontsize="x-small")
        axes.set_title(f"round {histogram.number}", fontsize="small")
        axes.set_xlabel("score (logit)", fontsize="small")
        axes.set_ylabel("share of group", fontsize="small")
    for axes in panels[len(histograms) :]:
        axes.set_axis_off()
    panels[0].legend(fontsize="x-small")
    figure.suptitle(plain(category))
    return _save(figure, path)


def work_per_round(by_category: Mapping[str, Sequence[RoundRow]], path: Path) -> Path:
    """Votes and money per round, one line per category."""
    figure = _figure(9, 3.4, left=0.07, wspace=0.25)
    votes, money = figure.subplots(1, 2)
    for category, rounds in by_category.items():
        x = [row.number for row in rounds]
        votes.plot(x, [row.votes for row in rounds], ".-", label=plain(category))
        money.plot(x, [float(row.spend) for row in rounds], ".-", label=plain(category))
    votes.set(xlabel="round", ylabel="votes", title="votes per round")
    money.set(xlabel="round", ylabel="spent (USD)", title="money per round")
    if len(by_category) <= 12:
        votes.legend(fontsize="x-small")
    return _save(figure, path)


def worker_quality(workers: Sequence[WorkerRecord], path: Path) -> Path:
    """Gold accuracy against assignments done; blocked workers marked."""
    figure = _figure(6, 4)
    axes = figure.add_subplot()
    scored = [w for w in workers if w.gold_correct + w.gold_wrong > 0]
    for blocked, marker, color, name in ((False, "o", "#1c7ed6", "working"), (True, "x", "#c92a2a", "blocked")):
        chosen = [w for w in scored if w.blocked == blocked]
        if chosen:
            axes.scatter(
                [w.assignments for w in chosen],
                [w.gold_correct / (w.gold_correct + w.gold_wrong) for w in chosen],
                s=[12 + 4 * math.sqrt(w.gold_correct + w.gold_wrong) for w in chosen],
                marker=marker,
                color=color,
                alpha=0.7,
                label=f"{name} ({len(chosen)})",
            )
    if not scored:  # no gold: nothing measures the workers, and the figure says so
        axes.set_axis_off()
        axes.text(
            0.5,
            0.5,
            "No gold answers: workers cannot be judged.\nAdd known answers with lsun-crowd ingest --gold.",
            ha="center",
            va="center",
        )
        return _save(figure, path)
    axes.set_xscale("symlog")
    axes.set_ylim(-0.05, 1.05)
    axes.set(xlabel="assignments done", ylabel="gold accuracy", title="workers (marker size: gold answers)")
    axes.legend(fontsize="small")
    return _save(figure, path)


def audit_intervals(rows: Sequence[AuditRow], path: Path) -> Path:
    """Each combined estimate with its exact and prediction-powered intervals."""
    metrics = sorted({row.metric for row in rows})
    height = 0.6 + 0.35 * max(len([r for r in rows if r.metric == m]) for m in metrics)
    figure = _figure(4 * len(metrics), height, layout="constrained")  # its labels are project text
    panels: Any = np.atleast_1d(figure.subplots(1, len(metrics), squeeze=False)).ravel()
    for axes, metric in zip(panels, metrics, strict=True):
        chosen = [row for row in rows if row.metric == metric]
        y = np.arange(len(chosen))[::-1]
        for position, row in zip(y, chosen, strict=True):
            if row.exact_low is not None and row.exact_high is not None:
                axes.plot([row.exact_low, row.exact_high], [position + 0.12] * 2, color="#495057", linewidth=2)
            if row.ppi_low is not None and row.ppi_high is not None:
                axes.plot([row.ppi_low, row.ppi_high], [position - 0.12] * 2, color="#1c7ed6", linewidth=2)
            if row.estimate is not None:
                axes.plot([row.estimate], [position], "ko", markersize=3)
        axes.set_yticks(y, [plain(f"{row.category} / {row.stratum}") for row in chosen], fontsize="x-small")
        axes.set_title(plain(metric), fontsize="small")
    panels[0].plot([], [], color="#495057", label="exact")
    panels[0].plot([], [], color="#1c7ed6", label="PPI++")
    panels[0].legend(fontsize="x-small")
    return _save(figure, path)
