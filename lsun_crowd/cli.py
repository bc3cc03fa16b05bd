"""The ``lsun-crowd`` command line. Errors go to stderr, name the file, row or field, and exit 2."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console
from rich.table import Table

from lsun_crowd import __version__
from lsun_crowd.certificate import certificates
from lsun_crowd.config import CONFIG_FILE, DEFAULT_TOML, MAX_SEED
from lsun_crowd.crowd import CrowdBackend
from lsun_crowd.downloads import DownloadLimits
from lsun_crowd.errors import errors, reported_errors
from lsun_crowd.export import export_labels
from lsun_crowd.ingest import ingest as ingest_sources
from lsun_crowd.ingest import ingest_gold
from lsun_crowd.lock import current_holder
from lsun_crowd.methods import DEFAULT_METHOD, METHODS
from lsun_crowd.multilabel import multilabel_status
from lsun_crowd.outputs import write_text
from lsun_crowd.plugins import Plugins
from lsun_crowd.preview import render_preview, sample_hit
from lsun_crowd.project import INGEST_REPORT, Project
from lsun_crowd.publish import spent_so_far
from lsun_crowd.redact import redact_logging
from lsun_crowd.status import category_status, gold_warning, without_gold

app = typer.Typer(
    help="Build large, trustworthy image datasets with crowd votes and a classifier cascade.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # help is plain text: "[repair]" and "[crowd]" are config sections, not markup
)
_display_type = typer.core.TyperOption.display_type_rich


def _no_type_for_flags(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """Typer's help shows ``<bool>`` beside every on/off flag (``--yes``, ``--help``), which takes
    no value; a flag shows no type."""
    return None if self.is_flag else _display_type(self, ctx)


typer.core.TyperOption.display_type_rich = _no_type_for_flags  # type: ignore[method-assign]
# Piped into a file or another program, a table keeps whole headers and cells: Rich would lay it
# out for 80 columns and cut "redundancy" to "redundan…".
PIPE_WIDTH = 200
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPE_WIDTH)
ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="project directory")]


def crowd_that_may_spend(opened: Project, crowd: str | None, yes: bool) -> CrowdBackend:
    """The project's crowd (or the adapter named), cleared to spend once the user agrees (or
    ``--yes``) to the most it may cost."""
    backend = opened.crowd(crowd)
    from lsun_crowd.running import confirm_spend  # the runner and every step: only where work may run

    warning = confirm_spend(opened, backend, yes, lambda text: typer.confirm(text, default=False))
    if warning is not None:
        console.print(warning)
    return backend


@app.command()
def init(directory: Path, force: bool = typer.Option(False, help="overwrite an existing config")) -> None:
    """Write DIRECTORY/lsun-crowd.toml with commented defaults."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CONFIG_FILE
    if target.exists() and not force:
        errors.print(f"error: {target} exists; pass --force to overwrite it")
        raise typer.Exit(2)
    target.write_text(DEFAULT_TOML.replace('name = "lsun-crowd-project"', f'name = "{directory.resolve().name}"'))
    console.print(f"wrote {target}")


@app.command()
def ingest(
    sources: Annotated[list[Path], typer.Argument(help="folders, images or .txt/.csv/.jsonl manifests")],
    project: ProjectOption = Path("."),
    gold: Annotated[Path | None, typer.Option(help="CSV of known answers: uri,category,label")] = None,
) -> None:
    """Add images to the pool; duplicates are skipped. Each image, manifest line or link that
    cannot be read is one rejection, printed as FILE:LINE: reason (and kept in
    ingest-report.jsonl); every valid entry beside it is stored. Exit status 1 when anything was
    rejected, 2 when a source cannot be read at all."""
    with reported_errors():
        opened = Project.open(project)
        settings = opened.config.ingest
        limits = DownloadLimits(settings.download_deadline_seconds, settings.max_download_bytes)
        report = ingest_sources(opened.store, sources, project / "downloads", limits)
        report.write(project / INGEST_REPORT)
        for entry in report.rejected:
            errors.print(f"{entry.source}: {entry.reason}", markup=False)
        console.print(
            f"added {report.added} image(s), skipped {report.duplicates} duplicate(s), rejected {len(report.rejected)}"
            + (f" (listed in {project / INGEST_REPORT})" if report.rejected else "")
        )
        if gold is not None:
            console.print(f"read {ingest_gold(opened.store, gold)} gold answer(s) from {gold}")
    if report.rejected:
        raise typer.Exit(1)


@app.command()
def run(
    project: ProjectOption = Path("."),
    crowd: Annotated[str | None, typer.Option(help="crowd adapter (default: the one the config names)")] = None,
    rounds: Annotated[int | None, typer.Option(help="most rounds per category")] = None,
    category: Annotated[list[str] | None, typer.Option(help="only these categories")] = None,
    once: Annotated[bool, typer.Option("--once", help="one pass over every category, then exit")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="spend real money without asking")] = False,
) -> None:
    """Run or resume the cascade: every category side by side until each is resolved, at its round
    limit, or out of money. One run per project at a time."""
    with reported_errors():
        opened = Project.open(project)
        backend = crowd_that_may_spend(opened, crowd, yes)
        from lsun_crowd.running import EXIT_INTERRUPTED, exit_code, run_project

        try:
            outcomes = run_project(opened, backend, console, categories=category or None, rounds=rounds, once=once)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None  # run_project said what is finished
    code = exit_code(outcomes)
    if code:
        raise typer.Exit(code)


@app.command()
def status(
    project: ProjectOption = Path("."),
    overlaps: Annotated[
        bool, typer.Option("--overlaps", help="also count images positive in several categories (reads every label)")
    ] = False,
) -> None:
    """Where each category stands: from counts kept as labels are written, so it answers at once
    whatever the pool's size."""
    with reported_errors():
        opened = Project.open(project)
        table = Table(
            "category",
            "rounds",
            "state",
            "positive",
            "negative",
            "unlabeled",
            "by humans",
            "votes",
            "votes saved",
            "spent (USD)",
        )
        rows = category_status(opened.store, opened.config.project.categories)
        for row in rows:
            table.add_row(
                row.category,
                str(row.rounds),
                row.state,
                str(row.positive),
                str(row.negative),
                str(row.unlabeled),
                str(row.human_labeled),
                str(row.votes),
                str(row.votes_saved),
                f"{row.spent:.2f}",
            )
        total = spent_so_far(opened.store)  # rounds, audits, repairs, multi-label jobs: every spend row
        table.add_section()
        table.add_row(
            "in all", "", "", "", "", "", "", str(sum(row.votes for row in rows)), "", f"{total:.2f}", style="bold"
        )
        console.print(table)
        missing = without_gold(opened.store, opened.config.project.categories)
        if missing:
            console.print(f"[yellow]warning:[/] {gold_warning(missing)}", highlight=False)
        with opened.store.session() as session:
            for certificate in certificates(session, opened.config.project.categories):
                console.print(f"guarantee: {certificate.describe()}")
        several = multilabel_status(opened.store, opened.config.project.groups, overlaps)
        if several.positive_in_several is not None:
            console.print(f"images positive in two or more categories: {several.positive_in_several}")
        for group, count in several.conflicts.items():
            console.print(
                f"group {group}: {count} image(s) in conflict (counted as labeled above), exported as unlabeled "
                "with reason conflict until `lsun-crowd conflicts` settles them"
            )
        holder = current_holder(opened.store)
        if holder is not None:
            console.print(f"a run is working on this project: {holder.describe()}")


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="output file")],
    project: ProjectOption = Path("."),
    format: Annotated[
        str, typer.Option("--format", help="jsonl or csv; multilabel: one record per image (CSV for a .csv --out)")
    ] = "jsonl",
) -> None:
    """Write the final labels, one record per image and category (or per image, with every
    category). Every image is in it: an unlabeled record says why (not yet sampled, unresolved,
    or conflict: in conflict in a single-label group). Gold answers are exported as human labels
    of round 0; a label set by a repair or a conflict's resolution has no round."""
    with reported_errors():
        opened = Project.open(project)
        summary = export_labels(opened.store, out, format, opened.config.project.groups)
        console.print(f"wrote {summary.records} record(s) to {out}")
        if summary.held_back_total:
            console.print(summary.describe())


@app.command()
def aggregate(
    votes: Annotated[Path, typer.Argument(help="CSV with columns question,worker,answer")],
    out: Annotated[Path, typer.Option(help="labels CSV to write")],
    method: Annotated[str, typer.Option(help=f"one of: {', '.join(METHODS)}")] = DEFAULT_METHOD,
) -> None:
    """Aggregate any vote file into labels with their probabilities.

    The file may start with a UTF-8 byte-order mark (Excel's "CSV UTF-8") and its header may be
    in any case. Worker ids are normalised (Unicode NFKC, invisible characters removed) and a
    worker's repeated votes on one question count once (the first is kept), each with a warning
    on stderr. A malformed row, text that is not UTF-8, a field over 4,096 characters or an
    answer like 1_0 stops with the file and line."""
    from lsun_crowd.votes_io import VotesFileError, read_votes, write_labels  # Arrow, loaded only by this command

    with reported_errors():
        if method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
        if out.is_dir():
            raise VotesFileError(f"--out {out}: is a folder; name the labels CSV to write")
        table = read_votes(votes, warn=lambda text: errors.print(f"warning: {votes}: {text}", markup=False))
        n_votes, n_workers = len(table.item_index), len(table.workers)
        posterior = METHODS[method](table)
        del table  # the votes' arrays, a third of the memory on millions of votes: writing needs none
        count = write_labels(out, posterior)
        console.print(f"{method}: {n_votes} votes by {n_workers} workers → {count} labels in {out}")


@app.command()
def plugins(all: Annotated[bool, typer.Option("--all", help="include built-in plugins")] = False) -> None:
    """Installed plugins and what they provide."""
    with reported_errors():
        loaded = Plugins()
        table = Table("plugin", "distribution", "version", "hooks")
        for info in loaded.describe(include_builtin=all):
            table.add_row(info.name, info.distribution, info.version, ", ".join(info.hooks))
        console.print(table)
        console.print("crowd adapters: " + ", ".join(loaded.crowd_adapters.names()))
        console.print("backbones: " + ", ".join(loaded.backbones.names()))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="where the demo project goes")] = Path("lsun-crowd-demo"),
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="the crowd's and the cascade's seed")] = 0,
    compare: Annotated[
        bool, typer.Option(help="run the pool again with fixed redundancy and print both side by side")
    ] = True,
) -> None:
    """The whole cascade, offline, on scikit-learn's digits with a simulated crowd."""
    from lsun_crowd.demo import run_demo

    with reported_errors():
        run_demo(out, seed=seed, console=console, compare=compare)


@app.command()
def simulate(
    items: Annotated[int, typer.Option(min=100, help="images in the synthetic pool")] = 100_000,
    categories: Annotated[int, typer.Option(min=1, help="categories (their positives overlap)")] = 1,
    positive_rate: Annotated[float, typer.Option(min=0.0005, max=0.5, help="share of positives per category")] = 0.1,
    dim: Annotated[int, typer.Option(min=2, max=4096, help="embedding dimensions")] = 16,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="the pool's, the crowd's and the cascade's seed")] = 0,
    separation: Annotated[float, typer.Option(min=0.0, help="distance between the classes: less is harder")] = 6.0,
    ambiguous: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of images the model cannot tell")] = 0.002,
    rounds: Annotated[int, typer.Option(min=1, help="most rounds per category")] = 10,
    sample: Annotated[int, typer.Option(min=0, help="images per round to people (0: chosen from the pool)")] = 0,
    out: Annotated[Path | None, typer.Option(help="project folder to keep (default: a temporary one)")] = None,
    database_url: Annotated[str, typer.Option(help="SQLAlchemy URL of the store (default: SQLite in OUT)")] = "",
    target_recall: Annotated[
        float | None, typer.Option(min=0.0, max=0.99, help="recall to certify (default: the cascade's)")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write every figure to this JSON file")] = None,
) -> None:
    """The real store, runner, aggregation and splitter with the simulated crowd on a synthetic
    pool of known truth: votes per resolved image, precision, recall and each stage's time and
    memory, per round and in all."""
    from lsun_crowd import simulate as simulation

    settings = simulation.Settings(
        items, categories, positive_rate, dim, seed, separation, ambiguous, rounds, sample, database_url, target_recall
    )

    def print_round(figures: simulation.RoundFigures) -> None:
        row = figures.row()
        console.print(
            f"{row['category']} round {row['round']}: precision {row['precision']:.4f}, recall {row['recall']:.4f}, "
            f"unlabeled {row['unlabeled']:.2%}, {row['votes']:,} votes ({row['votes_per_resolved']:.4f} per resolved)"
            f"\n  {simulation.stage_line(figures.stages)}",
            highlight=False,
        )

    with reported_errors():
        console.print(
            f"simulating {items:,} images × {categories} categories, {positive_rate:.1%} positive, dim {dim}, "
            f"{settings.sample_per_round():,} images a round"
        )
        result = simulation.simulate(settings, out, on_round=print_round)
        summary = result.summary()
        console.print(f"built the pool in {summary['build_seconds']:.1f}s; cascade {summary['cascade_seconds']:.1f}s")
        for line in summary["outcomes"]:
            console.print(line)
        console.print(f"stages in all: {simulation.stage_line(result.stage_totals)}", highlight=False)
        console.print(
            f"in all: precision {summary['precision']:.4f}, recall {summary['recall']:.4f}, unlabeled "
            f"{summary['unlabeled']:.2%}, {summary['votes']:,} votes ({summary['votes_per_resolved']:.4f} per "
            f"resolved image), peak memory {summary['peak_mb']:,} MB; project in {result.directory}",
            highlight=False,
        )
        if json_out is not None:
            simulation.save_json(result, json_out)


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="folder to write index.html and its plots/ into")],
    project: ProjectOption = Path("."),
) -> None:
    """Write an HTML report with plots: labels, scores and thresholds, guarantees, votes and money,
    workers, repairs and the audit, round by round."""
    from lsun_crowd.report import write_report

    with reported_errors():
        written = write_report(Project.open(project), out)
        console.print(f"wrote {written.index} with {written.figures} figure(s)")


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context, version: Annotated[bool, typer.Option("--version", help="print the version")] = False
) -> None:
    if version:
        console.print(__version__)
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())
        raise typer.Exit(2)


@app.command()
def preview(
    project: ProjectOption = Path("."),
    category: Annotated[str | None, typer.Option(help="category (default: the first)")] = None,
    out: Annotated[Path, typer.Option(help="HTML file to write")] = Path("hit-preview.html"),
) -> None:
    """Render one HIT of a category to an HTML file: what a worker will see, before paying for it."""
    with reported_errors():
        opened = Project.open(project)
        batch = sample_hit(opened, category)
        shown = render_preview(opened.crowd(), batch, opened.directory)
        write_text(out, shown.html)
        size = shown.size if shown.size is not None else len(shown.html)
        limit = f" of at most {shown.limit:,}" if shown.limit is not None else ""
        note = f" ({shown.note})" if shown.note else ""
        images = len(batch.hits[0].items)
        console.print(f"{out}: one HIT of {images} images for {batch.category}; {size:,}{limit} characters{note}")


@app.command()
def audit(
    sample: Annotated[int, typer.Option(help="final labels to check, drawn across categories and sources")],
    project: ProjectOption = Path("."),
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="the same sample and seed resume (or reprint) the same audit")
    ] = 0,
    votes: Annotated[int, typer.Option(help="fresh votes asked per image (a majority of at least three)")] = 5,
    crowd: Annotated[str | None, typer.Option(help="crowd adapter (default: the one the config names)")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="spend real money without asking")] = False,
) -> None:
    """Check a random sample of final labels with fresh workers and print precision, recall and NPV
    per stratum, category and overall, with exact and PPI++ intervals (docs/audit.md)."""
    from lsun_crowd.audit.run import check_arguments, run_audit
    from lsun_crowd.audit.terminal import print_audit
    from lsun_crowd.lock import RunLockGuard
    from lsun_crowd.progress import RichCascadeProgress, progress_bars

    with reported_errors():
        check_arguments(sample, votes)
        opened = Project.open(project)
        backend = crowd_that_may_spend(opened, crowd, yes)
        guard = RunLockGuard(opened.store)
        with guard, progress_bars(console) as bars:
            outcome = run_audit(
                opened.config,
                opened.store,
                backend,
                sample=sample,
                seed=seed,
                votes=votes,
                progress=RichCascadeProgress(bars),
                on_pass=guard.heartbeat,
            )
        print_audit(console, outcome)


@app.command()
def conflicts(
    project: ProjectOption = Path("."),
    group: Annotated[list[str] | None, typer.Option(help="only these single-label groups")] = None,
    crowd: Annotated[str | None, typer.Option(help="crowd adapter (default: the one the config names)")] = None,
    once: Annotated[bool, typer.Option("--once", help="one step for each group, then exit")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="spend real money without asking")] = False,
) -> None:
    """Send the images in conflict in single-label groups to people, all the group's categories at
    once, and write what they settle as new labels. `run` does this by itself once a group's
    categories are finished."""
    from lsun_crowd.conflicts import run_conflicts
    from lsun_crowd.lock import RunLockGuard

    with reported_errors():
        opened = Project.open(project)
        if not opened.config.project.groups:
            raise ValueError(f"{project / CONFIG_FILE}: project.groups: no single-label group is declared")
        backend = crowd_that_may_spend(opened, crowd, yes)
        guard = RunLockGuard(opened.store)
        with guard:
            context = opened.cascade(backend).context
            reports = run_conflicts(context, group or None, once=once, on_pass=guard.heartbeat)
        for found in reports:
            console.print(
                f"group {found.group}: {found.state}; {found.jobs} conflict job(s), {found.settled} image(s) "
                f"settled by people, {found.unsettled} not; {found.conflicts} in conflict now"
            )


@app.command()
def repair(
    project: ProjectOption = Path("."),
    category: Annotated[list[str] | None, typer.Option(help="only these categories")] = None,
    crowd: Annotated[str | None, typer.Option(help="crowd adapter (default: the one the config names)")] = None,
    once: Annotated[bool, typer.Option("--once", help="one step for each category, then exit")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="spend real money without asking")] = False,
) -> None:
    """Find human labels that are likely wrong (out-of-fold scores and confident learning), ask
    workers who never saw those images, and write what their votes settle as new labels. `run`
    does this by itself when a category finishes ([repair] in lsun-crowd.toml)."""
    from lsun_crowd.lock import RunLockGuard
    from lsun_crowd.repair import run_repair

    with reported_errors():
        opened = Project.open(project)
        names = category or opened.config.project.categories
        if not names:
            raise ValueError(f"{project / CONFIG_FILE}: project.categories: no category to repair")
        backend = crowd_that_may_spend(opened, crowd, yes)
        guard = RunLockGuard(opened.store)
        with guard:
            summaries = run_repair(opened.cascade(backend).context, names, once=once, on_pass=guard.heartbeat)
        for found in summaries:
            console.print(found.describe())


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    redact_logging()  # nothing a platform or a plugin logs puts a credential on stderr
    with reported_errors():
        Plugins().add_commands(app)
    app(prog_name="lsun-crowd")


if __name__ == "__main__":
    main()
