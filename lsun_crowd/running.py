"""Running a project from a command: the run lock, the live-spend confirmation, progress bars and
the closing lines. ``lsun-crowd run`` and plugins' own run commands (``lsun-crowd mturk run``) go
through :func:`run_project`, so every way of running a project holds the same lock."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from lsun_crowd.crowd import ConfirmsSpend, CrowdBackend, SpendNotConfirmed
from lsun_crowd.lock import RunLockGuard
from lsun_crowd.progress import RichCascadeProgress, progress_bars
from lsun_crowd.project import Project
from lsun_crowd.publish import spent_so_far
from lsun_crowd.runner import CategoryOutcome, Outcome
from lsun_crowd.status import category_status, gold_warning, without_gold

MONEY = (Outcome.BUDGET, Outcome.BALANCE)
EXIT_STOPPED_FOR_MONEY = 3  # 1 is left to Python and Click, 2 to errors (lsun_crowd.errors)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports a process ended by SIGINT


def confirm_spend(project: Project, crowd: CrowdBackend, yes: bool, ask: Callable[[str], bool]) -> str | None:
    """Where the crowd spends real money, say so with the most this run can spend, and ask (unless
    ``yes``). Returns the warning shown, ``None`` for a crowd without real money."""
    if not isinstance(crowd, ConfirmsSpend):
        return None
    warning = crowd.spend_confirmation()
    if warning is None:
        return None
    most = project.config.cascade.budget - spent_so_far(project.store)
    text = f"{warning}: this run may spend up to {most} USD more (the budget left)"
    if not yes and not ask(f"{text}. Go on?"):
        raise SpendNotConfirmed("nothing was published: the spend was not confirmed (pass --yes in scripts)")
    crowd.confirm_spend()
    return text


def run_project(
    project: Project,
    crowd: CrowdBackend,
    console: Console,
    *,
    categories: list[str] | None = None,
    rounds: int | None = None,
    once: bool = False,
) -> list[CategoryOutcome]:
    """Run (or resume) the project under its run lock, drawing progress bars on ``console``; prints
    one closing line per category."""
    missing = without_gold(project.store, categories or project.config.project.categories)
    if missing:
        console.print(f"[yellow]warning:[/] {gold_warning(missing)}", markup=True, highlight=False)
    guard = RunLockGuard(project.store)
    try:
        with guard, progress_bars(console) as bars:
            cascade = project.cascade(crowd, RichCascadeProgress(bars), bars)
            outcomes = cascade.runner(categories or None, rounds).run(once=once, on_pass=guard.heartbeat)
    except KeyboardInterrupt:
        console.print(interrupted(project), markup=False, highlight=False)
        raise
    for outcome in outcomes:
        if outcome.reason == Outcome.RUNNING:
            console.print(f"{outcome.category}: round {outcome.rounds} in progress")
        elif outcome.reason in MONEY:
            console.print(f"{outcome.category}: stopped after {outcome.rounds} round(s), {outcome.detail}")
        else:
            console.print(f"{outcome.category}: {outcome.reason} after {outcome.rounds} round(s)")
    return outcomes


def interrupted(project: Project) -> str:
    """What ``run`` says when Ctrl-C stops it: what is finished, and how to go on."""
    rows = category_status(project.store, project.config.project.categories)
    done = "; ".join(f"{row.category}: round {row.rounds} ({row.state}), {row.unlabeled:,} unlabeled" for row in rows)
    return (
        f"interrupted: {done}. Every finished step is stored; nothing is lost, and nothing will be "
        f"asked or paid twice. Resume with: lsun-crowd run --project {project.directory}"
    )


def exit_code(outcomes: list[CategoryOutcome]) -> int:
    """What ``run`` exits with: 0 when every category is resolved, at its round limit or (after
    ``--once``) still running; :data:`EXIT_STOPPED_FOR_MONEY` when any stopped for its budget or
    the platform's balance, so a script can tell the two apart."""
    return EXIT_STOPPED_FOR_MONEY if any(outcome.reason in MONEY for outcome in outcomes) else 0
