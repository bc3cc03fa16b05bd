"""The audit's figures as a rich table: every stratum with both intervals."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from lsun_crowd.audit.run import AuditOutcome
from lsun_crowd.audit.stats import Interval


def _interval(interval: Interval | None) -> str:
    return "—" if interval is None else f"[{interval.low:.3f}, {interval.high:.3f}]"


def print_audit(console: Console, outcome: AuditOutcome, alpha: float = 0.05) -> None:
    level = f"{1 - alpha:.0%}"
    table = Table(
        "category",
        "stratum",
        "metric",
        "n",
        "estimate",
        f"exact {level} (Clopper–Pearson)",
        f"PPI++ {level}",
        title=f"audit {outcome.audit_id}: {outcome.sample} labels checked by fresh workers",
    )
    for figure in outcome.figures:
        estimate = "—" if figure.exact.estimate is None else f"{figure.exact.estimate:.3f}"
        table.add_row(
            figure.category or "every category",
            figure.stratum,
            figure.metric,
            str(figure.n),
            estimate,
            _interval(figure.exact),
            _interval(figure.ppi),
        )
    console.print(table)
    note = "resumed: the stored sample was reused" if outcome.resumed else "new sample"
    console.print(
        f"{note}; {outcome.unresolved} of {outcome.sample} audited labels undecided (fewer than three votes or "
        "a tie): the exact intervals count them against each bound, the estimates and PPI++ leave them out"
    )
