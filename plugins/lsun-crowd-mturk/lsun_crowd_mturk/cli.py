"""``lsun-crowd mturk balance | preview | cleanup | workers | run``."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from lsun_crowd import api
from lsun_crowd.api import platform_work, spent, worker_records

if TYPE_CHECKING:
    from lsun_crowd.api import Project
from lsun_crowd.render import Renderer
from lsun_crowd_mturk import MTurkCrowd, open_crowd, parse_settings

mturk = typer.Typer(
    help=(
        "Amazon Mechanical Turk: balance, HIT preview, cleanup, workers, live runs. AWS closed Mechanical "
        "Turk on 30 September 2026 (its notice atop the MTurk API reference, "
        "https://docs.aws.amazon.com/AWSMechTurk/latest/AWSMturkAPI/Welcome.html); the adapter stays for "
        "MTurk-compatible servers and for reproducing older projects."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help text, as the main command's
)
console = Console(soft_wrap=True)
ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="project directory")]
LiveOption = Annotated[bool, typer.Option("--live", help="live Mechanical Turk (real money) instead of the sandbox")]
YesOption = Annotated[bool, typer.Option("--yes", help="skip the confirmation (for scripts)")]


def _open(project: Path, live: bool, yes: bool = True, spend: Decimal | None = None) -> tuple[Project, MTurkCrowd]:
    opened = api.Project.open(project)
    settings = parse_settings(opened.config.crowd.settings)
    if live and not settings.live:
        settings = settings.model_copy(update={"live": True})
    if settings.live and not yes:
        limit = f" and may spend up to {spend} USD of real money" if spend is not None else ""
        typer.confirm(f"This uses LIVE Mechanical Turk{limit}. Go on?", abort=True)
    templates = Renderer(opened.directory)
    return opened, open_crowd(settings, opened.config.project.name, live_confirmed=settings.live, templates=templates)


def _mode(crowd: MTurkCrowd) -> str:
    return f"live ({crowd.settings.endpoint()})" if crowd.settings.live else f"sandbox ({crowd.settings.endpoint()})"


@mturk.command()
def balance(project: ProjectOption = Path("."), live: LiveOption = False) -> None:
    """The account's available balance."""
    with api.reported_errors():
        _, crowd = _open(project, live)
        console.print(f"{_mode(crowd)}: {crowd.balance()} USD available")


@mturk.command()
def preview(
    project: ProjectOption = Path("."),
    category: Annotated[str | None, typer.Option(help="category (default: the first)")] = None,
    out: Annotated[Path, typer.Option(help="HTML file to write")] = Path("hit-preview.html"),
    live: LiveOption = False,
) -> None:
    """Write one HIT, rendered exactly as MTurk will show it, to a local HTML file."""
    with api.reported_errors():
        opened, crowd = _open(project, live)
        batch = api.sample_hit(opened, category)
        shown = crowd.preview(batch)
        out.write_text(shown.html, encoding="utf-8")
        console.print(
            f"{out}: one HIT of {len(batch.hits[0].items)} images; "
            f"{shown.size:,} of MTurk's {shown.limit:,} characters ({shown.note})"
        )


@mturk.command()
def cleanup(
    project: ProjectOption = Path("."),
    live: LiveOption = False,
    yes: YesOption = False,
    delete: Annotated[bool, typer.Option(help="also delete the HITs MTurk allows deleting")] = False,
    job: Annotated[
        list[str] | None, typer.Option(help="also stop this published job's HITs (its batch id, from `status`)")
    ] = None,
) -> None:
    """Expire (and with --delete, delete) HITs this project created that its store does not account
    for: created by this project (its name and identity), yet part of no job the store knows. HITs of
    a job still publishing are left alone: the next `run` adopts them. --job also stops the HITs of
    a published job you name; the next run collects what was submitted and goes on."""
    with api.reported_errors():
        opened, crowd = _open(project, live, yes)
        key = api.project_key(opened)
        work = platform_work(opened)
        named = set(job or [])
        for batch in sorted(named):
            if work.jobs.get(batch) != "published":
                state = work.jobs.get(batch, "not a job of this project")
                raise api.ConfigError(f"--job {batch}: only a published job's HITs can be stopped ({state})")
        chosen = []
        for hit in crowd.project_hits(key):
            batch = str(hit.get("RequesterAnnotation", "")).split("|")[0]
            orphan = batch not in work.jobs and hit["HITId"] not in work.hit_ids
            if orphan or batch in named:
                chosen.append(hit)
        if not chosen:
            console.print(f"{_mode(crowd)}: no HITs of {key} to clean up: the store accounts for every one")
            return
        for hit in chosen:
            crowd.expire([hit["HITId"]])
            deleted = delete and crowd.delete(hit["HITId"])
            state = "expired and deleted" if deleted else "expired"
            console.print(f"{hit['HITId']} ({hit.get('RequesterAnnotation', '')}): {state}")
        console.print(f"{len(chosen)} HIT(s) of {key} cleaned up")


@mturk.command()
def workers(
    project: ProjectOption = Path("."),
    block: Annotated[str | None, typer.Option(help="block this worker id")] = None,
    unblock: Annotated[str | None, typer.Option(help="unblock this worker id")] = None,
    reason: Annotated[str, typer.Option(help="reason sent with a block or unblock")] = "requester decision",
    live: LiveOption = False,
) -> None:
    """Workers seen by this project, with their gold record; block or unblock one."""
    with api.reported_errors():
        opened, crowd = _open(project, live)
        if block:
            crowd.block_worker(block, reason)
            console.print(f"{block}: blocked ({crowd.settings.block})")
        if unblock:
            crowd.unblock_worker(unblock, reason)
            console.print(f"{unblock}: unblocked")
        table = Table("worker", "assignments", "gold right", "gold wrong", "accuracy (posterior)", "blocked")
        for worker in worker_records(opened):
            quality = api.assess(worker.gold_correct, worker.gold_wrong, opened.config.quality)
            table.add_row(
                worker.worker_id,
                str(worker.assignments),
                str(worker.gold_correct),
                str(worker.gold_wrong),
                f"{quality.mean:.3f}",
                "yes" if worker.blocked or worker.worker_id == block else "",
            )
        console.print(table)


@mturk.command("run")
def run_on_mturk(
    project: ProjectOption = Path("."),
    live: LiveOption = False,
    yes: YesOption = False,
    rounds: Annotated[int | None, typer.Option(help="most rounds per category")] = None,
) -> None:
    """Run or resume the cascade on Mechanical Turk; live only after confirming the maximum spend."""
    with api.reported_errors():
        first = api.Project.open(project)
        spend = first.config.cascade.budget - spent(first)
        first.close()
        opened, crowd = _open(project, live, yes, spend)
        console.print(f"Mechanical Turk {_mode(crowd)}; at most {spend} USD more will be spent")
        outcomes = api.run_project(opened, crowd, console, rounds=rounds)
    code = api.exit_code(outcomes)
    if code:
        raise typer.Exit(code)
