"""The report's ``index.html``: one self-contained page, its figures linked by relative paths.

Every string from the project (its name, categories, worker ids, notes) is escaped here, in
:func:`cell` and :func:`text`, and nowhere else builds markup from data.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from lsun_crowd.report.gather import ReportData, RoundRow, rounds_by_category
from lsun_crowd.schema import RepairState, RoundState, RoundTest

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #212529; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #dee2e6; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #dee2e6; padding: 0.25em 0.6em; text-align: right; }
th { background: #f1f3f5; } td.text, th.text { text-align: left; }
img { max-width: 100%; display: block; margin: 0.8em 0; }
.empty { color: #868e96; font-style: italic; } .note { color: #495057; font-size: 0.9em; }
"""
BLOCKED_SHOWN = 50


@dataclass(frozen=True)
class Figures:
    """Relative paths of the figures drawn, keyed by what they show."""

    labels: dict[str, str]  # category -> path
    scores: dict[str, str]
    work: str | None
    workers: str | None
    audit: str | None

    def count(self) -> int:
        return len(self.labels) + len(self.scores) + sum(x is not None for x in (self.work, self.workers, self.audit))


def text(value: object) -> str:
    return html.escape(str(value), quote=True)


def cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return text(value)


@dataclass(frozen=True)
class Span:
    """A left-aligned cell of text across ``columns`` columns."""

    value: object
    columns: int = 1


def _cell_html(value: object, left: bool) -> str:
    if isinstance(value, Span):
        span = f' colspan="{value.columns}"' if value.columns > 1 else ""
        return f'<td class="text"{span}>{cell(value.value)}</td>'
    return f'<td class="text">{cell(value)}</td>' if left else f"<td>{cell(value)}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], text_columns: int = 1) -> str:
    """Headers and rows, the first ``text_columns`` columns left-aligned, and :class:`Span` cells."""
    head = "".join(
        f'<th class="text">{text(h)}</th>' if i < text_columns else f"<th>{text(h)}</th>" for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>" + "".join(_cell_html(v, i < text_columns) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(path: str | None, alt: str) -> str:
    return f'<img src="{text(path)}" alt="{text(alt)}">' if path else ""


def empty(message: str) -> str:
    return f'<p class="empty">{text(message)}</p>'


def render(project: str, data: ReportData, figures: Figures, scores_note: str) -> str:
    sections = [
        _summary(data),
        _labels(data, figures),
        _scores(data, figures, scores_note),
        _guarantees(data),
        _work(data, figures),
        _workers(data, figures),
        _repairs(data),
        _audit(data, figures),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{text(project)}: lsun-crowd report</title><style>{STYLE}</style></head><body>"
        f'<h1>{text(project)}</h1><p class="note">lsun-crowd report: {data.images} readable images, '
        f"{len(data.categories)} categories, {len(data.rounds)} rounds.</p>" + "".join(sections) + "</body></html>\n"
    )


def _summary(data: ReportData) -> str:
    if not data.categories:
        return '<h2 id="summary">Categories</h2>' + empty(
            "No category has started yet: run `lsun-crowd run` and build the report again."
        )
    return '<h2 id="summary">Categories</h2>' + table(
        ["category", "positive", "negative", "by people", "by the model", "unlabeled"],
        [(c.category, c.positive, c.negative, c.human, c.model, c.unlabeled) for c in data.categories],
    )


def _labels(data: ReportData, figures: Figures) -> str:
    parts = ['<h2 id="labels">Resolved and unlabeled per round</h2>']
    if not data.rounds:
        return parts[0] + empty("No rounds yet.")
    parts.append(
        '<p class="note">Current labels by the round that set them; "unlabeled after" counts today\'s readable '
        "images that no label of that round or an earlier one (nor gold) covers.</p>"
    )
    for category, rounds in rounds_by_category(data.rounds).items():
        parts.append(f"<h3>{text(category)}</h3>")
        parts.append(image(figures.labels.get(category), f"labels per round: {category}"))
        parts.append(
            table(
                ["round", "state", "people +", "people −", "model +", "model −", "unlabeled after", "notes"],
                [
                    (
                        r.number,
                        r.state + (" (people only)" if r.human_only else ""),
                        r.human_positive,
                        r.human_negative,
                        r.model_positive,
                        r.model_negative,
                        r.unlabeled_after,
                        Span(r.notes),
                    )
                    for r in rounds
                ],
                text_columns=2,
            )
        )
    return "".join(parts)


def _scores(data: ReportData, figures: Figures, note: str) -> str:
    parts = ['<h2 id="scores">Scores and thresholds</h2>']
    if not figures.scores:
        return parts[0] + empty(note or "No round has trained a model yet.")
    parts.append(
        '<p class="note">Each round\'s model scored a random sample of the pool (grey) and the images the round '
        "sent to people, by the label they gave. Dashed lines: the thresholds of the round's split (logits); "
        "at or above high is positive, at or below low negative.</p>"
    )
    if note:
        parts.append(f'<p class="note">{text(note)}</p>')
    for category, path in figures.scores.items():
        parts.append(f"<h3>{text(category)}</h3>" + image(path, f"score histograms: {category}"))
    return "".join(parts)


TEST_HEADERS = [
    "category",
    "round",
    "side",
    "mode",
    "threshold",
    "target",
    "δ",
    "recall slack",
    "calibration",
    "unresolved",
    "tested",
    "errors",
    "p-value",
    "bound",
    "labeled",
]


def _test_cells(row: RoundRow, test: RoundTest) -> list[object]:
    return [
        row.category,
        row.number,
        test.side,
        test.mode,
        test.threshold if test.threshold is not None else "none certified",
        test.target,
        test.delta,
        test.recall_slack,
        test.calibration_size,
        test.unresolved,
        test.tested,
        test.errors,
        test.p_value,
        test.bound,
        test.labeled,
    ]


def _guarantees(data: ReportData) -> str:
    title = '<h2 id="guarantee">Guarantee per round</h2>'
    if not data.rounds:
        return title + empty("No rounds yet.")
    rows: list[list[object]] = []
    for row in data.rounds:
        tests = data.tests.get(row.round_id, [])
        for test in tests:
            rows.append(_test_cells(row, test))
        if not tests:
            why = (
                "people only: nothing auto-labeled"
                if row.human_only
                else "not split yet"
                if row.state != RoundState.DONE
                else "not recorded"
            )
            rows.append([row.category, row.number, Span(why, len(TEST_HEADERS) - 2)])
    return (
        title + '<p class="note">What each split tested on its calibration images (table <code>round_tests</code>): '
        "the threshold it certified, the target and the error budget δ it was tested at, and the exact bound. "
        "See docs/guarantees.md for what the tests together guarantee.</p>" + table(TEST_HEADERS, rows, text_columns=4)
    )


def _work(data: ReportData, figures: Figures) -> str:
    title = '<h2 id="work">Votes and money per round</h2>'
    if not data.rounds and not data.other_work:
        return title + empty("No crowd work yet.")
    parts = [title, image(figures.work, "votes and money per round")]
    parts.append(
        table(
            ["category", "round", "votes", "of them gold", "spent (USD)"],
            [(r.category, r.number, r.votes, r.gold_votes, r.spend) for r in data.rounds],
        )
    )
    if data.other_work:
        parts.append("<h3>Work outside rounds</h3>")
        parts.append(
            table(
                ["category", "kind", "votes", "spent (USD)"],
                [(w.category or "–", w.kind, w.votes, w.spend) for w in data.other_work],
                text_columns=2,
            )
        )
    votes = sum(r.votes for r in data.rounds) + sum(w.votes for w in data.other_work)
    shown = sum((r.spend for r in data.rounds), Decimal(0)) + sum((w.spend for w in data.other_work), Decimal(0))
    elsewhere = data.spent - shown
    rest = f" ({elsewhere:.2f} USD of it in work of categories not configured now)" if elsewhere else ""
    parts.append(f'<p class="note">In all: {votes} votes, {data.spent:.2f} USD{rest}.</p>')
    return "".join(parts)


def _workers(data: ReportData, figures: Figures) -> str:
    title = '<h2 id="workers">Worker quality</h2>'
    if not data.workers:
        return title + empty("No worker has worked yet.")
    blocked = [w for w in data.workers if w.blocked]
    parts = [
        title,
        image(figures.workers, "gold accuracy against work done"),
        f'<p class="note">{len(data.workers)} workers, {len(blocked)} blocked.</p>',
    ]
    if blocked:
        shown = sorted(blocked, key=lambda w: -w.assignments)[:BLOCKED_SHOWN]
        parts.append(
            table(
                ["blocked worker", "assignments", "gold right", "gold wrong"],
                [(w.worker_id, w.assignments, w.gold_correct, w.gold_wrong) for w in shown],
            )
        )
        if len(blocked) > BLOCKED_SHOWN:
            parts.append(f'<p class="note">… and {len(blocked) - BLOCKED_SHOWN} more blocked workers.</p>')
    return "".join(parts)


def _repairs(data: ReportData) -> str:
    title = '<h2 id="repairs">Label repairs</h2>'
    repairs = data.repairs
    if not repairs.categories and not repairs.revisions:
        return title + empty("No repairs.")
    parts = [
        title,
        '<p class="note">Human labels scored out of fold, those confident learning flagged as likely wrong, '
        "and what fresh workers made of them.</p>",
    ]
    if repairs.categories:
        present = {state for count in repairs.categories for state in count.states}
        states = [state.value for state in RepairState if state in present] + sorted(present - set(RepairState))
        parts.append(
            table(
                ["category", "passes", "scored", "flagged", *states],
                [
                    (c.category, c.passes, c.scored, c.flagged, *(c.states.get(state, 0) for state in states))
                    for c in repairs.categories
                ],
            )
        )
    if repairs.revisions:
        parts.append(table(["category", "revised by", "label events"], repairs.revisions, text_columns=2))
    return "".join(parts)


def _percent(level: float | None) -> str:
    return f"{100 * level:.4g}%" if level is not None else "their stored level"


def _audit(data: ReportData, figures: Figures) -> str:
    title = '<h2 id="audit">Audit</h2>'
    audit = data.audit
    if not audit.rows:
        return title + empty("No audit yet.")
    parts = [
        title,
        f'<p class="note">Audit {audit.audit_id} ({audit.sample} labels asked for; the latest of {audit.audits} '
        f"with results). Intervals at {_percent(audit.level)}: exact (Clopper–Pearson, combined across strata) and "
        "prediction-powered (PPI++).</p>",
        image(figures.audit, "audit estimates with their intervals"),
        table(
            ["category", "stratum", "metric", "n", "estimate", "exact low", "exact high", "PPI++ low", "PPI++ high"],
            [
                (r.category, r.stratum, r.metric, r.n, r.estimate, r.exact_low, r.exact_high, r.ppi_low, r.ppi_high)
                for r in audit.rows
            ],
            text_columns=3,
        ),
    ]
    return "".join(parts)
