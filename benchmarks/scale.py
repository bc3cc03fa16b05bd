"""Doubling the pool: ``lsun-crowd simulate`` at several sizes, each stage's time and memory side by side.

    python benchmarks/scale.py --items 125000 250000 500000 1000000 [--positive-rate 0.1]
        [--repeat 2] [--database-url postgresql+psycopg://...]   # every size on that database (emptied first)

Each size runs as its own ``lsun-crowd simulate`` process (so memory peaks are its own), to the
end of its rounds. Prints, per size: the pool build, every stage's seconds and peak MB summed over
the rounds, the whole run, and the result (precision, recall, unlabeled, votes per resolved
image); then the ratio of each figure to the size before. ``--json-dir`` keeps every run's figures.

On a shared machine one run's stage times move with whatever else runs. ``--repeat K`` runs the
whole series K times, the sizes interleaved (125k, 250k, ..., then again), and reports for each
size and figure the smallest of its K: the same seed gives the same rounds and labels every time,
so the runs differ only in the machine's load.

``--postgres-server [NAME=VALUE ...]`` starts a throwaway local PostgreSQL server for the series
(``tests/postgres.py``, Debian's binaries, ``fsync=off``) with those server settings, e.g.
``shared_buffers=1GB``, and runs every size on it.

``--from-json DIR [DIR ...]`` runs nothing: it prints the same tables from the figures that earlier
series kept with ``--json-dir`` (every ``simulate-<items>-<run>.json`` there, least per figure).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lsun_crowd.stages import STAGES


def run(items: int, args: argparse.Namespace, out: Path, repeat: int) -> dict[str, Any]:
    figures = out / f"simulate-{items}-{repeat}.json"
    command = [
        sys.executable, "-m", "lsun_crowd.cli", "simulate",
        "--items", str(items), "--positive-rate", str(args.positive_rate), "--seed", str(args.seed),
        "--out", str(out / f"project-{items}-{repeat}"), "--json", str(figures),
    ]  # fmt: skip
    if args.database_url:
        _empty(args.database_url)
        command += ["--database-url", args.database_url]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    result: dict[str, Any] = json.loads(figures.read_text())
    result["wall_seconds"] = time.perf_counter() - started
    return result


def _empty(url: str) -> None:
    """A fresh schema for the next size on a shared PostgreSQL database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def rows(result: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(seconds, peak MB) per line of the table."""
    table = {"build pool": (result["build_seconds"], result["build_peak_mb"])}
    for stage in STAGES:
        figure = result["stages"].get(stage, {"seconds": 0.0, "peak_bytes": 0})
        table[stage] = (figure["seconds"], figure["peak_bytes"] / 2**20)
    table["build and cascade"] = (result["build_seconds"] + result["cascade_seconds"], result["peak_mb"])
    # Store writes follow the labels the model writes, which grow faster than the pool while
    # people's share shrinks: seconds per 1,000 of them tells the database's own growth apart.
    model_labels = result.get("labels", {}).get("model", 0)
    table["model labels (1,000s)"] = (model_labels / 1000, 0.0)
    table["store writes per 1,000"] = (1000 * table["store writes"][0] / max(model_labels, 1), 0.0)
    return table


FIGURES = ("model labels (1,000s)", "store writes per 1,000")  # figures, not stages: no memory of their own


def cell(line: str, value: tuple[float, float], digits: int, figure_digits: int) -> str:
    """One size's (seconds, MB), or a figure's value alone, right-aligned in the table's column."""
    if line in FIGURES:
        return f"{value[0]:>12.{figure_digits}f}" + " " * 9
    return f"{value[0]:>12.{digits}f} /{value[1]:>7.{0 if digits == 1 else 2}f}"


def fastest(runs: list[dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """Each line's smallest seconds and smallest peak MB over repeated runs of one size."""
    return {line: (min(run[line][0] for run in runs), min(run[line][1] for run in runs)) for line in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[125_000, 250_000, 500_000, 1_000_000])
    parser.add_argument("--positive-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--database-url", default="")
    parser.add_argument(
        "--postgres-server", nargs="*", default=None, metavar="NAME=VALUE", help="a throwaway server, these settings"
    )
    parser.add_argument("--json-dir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=1, help="runs of the series; each figure's least is kept")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None, help="print tables from kept figures")
    args = parser.parse_args()
    if args.from_json:
        kept: dict[int, list[dict[str, tuple[float, float]]]] = {items: [] for items in args.items}
        for directory in args.from_json:
            for items in args.items:
                kept[items] += [
                    rows(json.loads(path.read_text())) for path in directory.glob(f"simulate-{items}-*.json")
                ]
        missing = [items for items, found in kept.items() if not found]
        if missing:
            parser.error(f"no simulate-<items>-<run>.json for {missing} in {[str(d) for d in args.from_json]}")
        print(f"runs per size: {', '.join(f'{items:,}: {len(found)}' for items, found in kept.items())}")
        print_tables(args.items, [fastest(kept[items]) for items in args.items])
        return
    if args.postgres_server is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from postgres import fresh_database, postgres_server

        settings = dict(setting.split("=", 1) for setting in args.postgres_server)
        with postgres_server(settings) as server:
            args.database_url = fresh_database(server, "scale")
            series(args)
        return
    series(args)


def series(args: argparse.Namespace) -> None:
    out = args.json_dir or Path(tempfile.mkdtemp(prefix="lsun-crowd-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[int, list[dict[str, tuple[float, float]]]] = {items: [] for items in args.items}
    for repeat in range(args.repeat):
        for items in args.items:
            result = run(items, args, out, repeat)
            runs[items].append(rows(result))
            print(
                f"{items:>9,} (run {repeat + 1}): {result['wall_seconds']:.0f}s, peak {result['peak_mb']:,} MB, "
                f"precision {result['precision']:.4f}, recall {result['recall']:.4f}, "
                f"unlabeled {result['unlabeled']:.2%}, {result['votes']:,} votes "
                f"({result['votes_per_resolved']:.4f} per resolved), {len(result['rounds'])} rounds",
                flush=True,
            )
    print_tables(args.items, [fastest(runs[items]) for items in args.items])


def print_tables(sizes: list[int], tables: list[dict[str, tuple[float, float]]]) -> None:
    """Each size's figures side by side, then each figure's ratio to the size before."""
    header = "".join(f"{items:>22,}" for items in sizes)
    print(f"\n{'stage (seconds / peak MB)':<26}{header}")
    for line in tables[0]:
        cells = "".join(cell(line, table[line], 1, figure_digits=3) for table in tables)
        print(f"{line:<26}{cells}")
    print(f"\n{'ratio to the size before':<26}" + "".join(f"{items:>22,}" for items in sizes[1:]))
    for line in tables[0]:
        cells = ""
        for before, after in itertools.pairwise(tables):
            floor = 0.0 if line in FIGURES else 0.05  # a stage under 0.05 s has no meaningful ratio
            time_ratio = after[line][0] / before[line][0] if before[line][0] > floor else float("nan")
            memory_ratio = after[line][1] / before[line][1] if before[line][1] > 0 else float("nan")
            cells += cell(line, (time_ratio, memory_ratio), 2, figure_digits=2)
        print(f"{line:<26}{cells}")


if __name__ == "__main__":
    main()
