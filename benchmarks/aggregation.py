"""Our aggregators against crowd-kit's, side by side in one run.

    pip install -r benchmarks/requirements.txt
    python benchmarks/aggregation.py [--votes 5000000] [--skip-real] [--skip-synthetic]
                                     [--skip-end-to-end] [--repeat 2]

1. Accuracy on the real vote sets in ../shared/data/crowd_votes (duck, product) against truth.csv.
2. Dawid–Skene on synthetic votes (1,000,000 items × 5 votes, 2,000 workers, accuracies uniform
   in 0.55–0.95): fit time, peak memory during the fit, and accuracy. Each library fits in a
   fresh process; the peak is the growth of resident memory over the fit (Linux VmHWM, reset
   after the votes are built), so building the input is not counted for either.
3. End to end, CSV in to CSV out, on the same votes written as a CSV (``img_0000001`` questions,
   MTurk-like worker ids, in a shuffled order of arrival): ``lsun-crowd aggregate`` against
   pandas ``read_csv``, crowd-kit's ``DawidSkene(n_iter=100).fit_predict`` and ``to_csv`` of the
   labels and probabilities. Each is a fresh process, run one after the other ``--repeat`` times;
   wall time and peak resident memory (``ru_maxrss`` of that process, imports included) of the
   whole command, and each output's accuracy against the truth.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CROWD_VOTES = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd_votes"


def real_sets() -> None:
    import pandas as pd
    from crowdkit import aggregation as ck

    from lsun_crowd.methods import METHODS, Votes

    ours = {
        "ours majority": "majority",
        "ours dawid-skene": "dawid-skene",
        "ours one-coin": "one-coin",
        "ours glad": "glad",
    }
    theirs = {
        "crowd-kit MajorityVote": ck.MajorityVote(),
        "crowd-kit DawidSkene": ck.DawidSkene(n_iter=100),
        "crowd-kit OneCoinDawidSkene": ck.OneCoinDawidSkene(n_iter=100),
        "crowd-kit GLAD": ck.GLAD(),
        "crowd-kit MACE": ck.MACE(),
    }
    results: dict[str, dict[str, float]] = {}
    for name in ("duck", "product"):
        answers = pd.read_csv(CROWD_VOTES / name / "answers.csv")
        truth = pd.read_csv(CROWD_VOTES / name / "truth.csv").set_index("question")["truth"]
        votes = Votes.from_arrays(
            answers["question"].to_numpy(), answers["worker"].to_numpy(), answers["answer"].to_numpy()
        )
        for label, method in ours.items():
            posterior = METHODS[method](votes)
            predicted = pd.Series(np.array(votes.classes)[posterior.labels()], index=list(votes.items))
            results.setdefault(label, {})[name] = float((predicted.reindex(truth.index) == truth).mean())
        frame = answers.rename(columns={"question": "task", "answer": "label"})
        for label, model in theirs.items():
            predicted = model.fit_predict(frame)
            results.setdefault(label, {})[name] = float((predicted.reindex(truth.index) == truth).mean())
    print(f"{'method':<30} {'duck':>7} {'product':>8}")
    for label, scores in results.items():
        print(f"{label:<30} {scores['duck']:>7.4f} {scores['product']:>8.4f}")


def synthetic_votes(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    per_item, workers = 5, 2000
    items = count // per_item
    truth = rng.integers(0, 2, items)
    accuracy = rng.uniform(0.55, 0.95, workers)
    item = np.repeat(np.arange(items), per_item)
    worker = rng.integers(0, workers, items * per_item)
    correct = rng.random(items * per_item) < accuracy[worker]
    return item, worker, np.where(correct, truth[item], 1 - truth[item]), truth


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def fit_one(library: str, count: int) -> dict[str, float]:
    """Runs inside a fresh process: build the votes, reset the peak, fit, report."""
    item, worker, answer, truth = synthetic_votes(count)
    if library == "ours":
        from lsun_crowd.aggregate import Votes
        from lsun_crowd.dawid_skene import dawid_skene

        votes = Votes(tuple(range(len(truth))), tuple(range(2000)), (0, 1), item, worker, answer)
        fit = lambda: dawid_skene(votes).labels()  # noqa: E731
    else:
        import pandas as pd
        from crowdkit.aggregation import DawidSkene

        frame = pd.DataFrame({"task": item, "worker": worker, "label": answer})
        fit = lambda: DawidSkene(n_iter=100).fit_predict(frame).sort_index().to_numpy()  # noqa: E731
    del item, worker, answer
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    before = _rss_kib("VmRSS")
    start = time.perf_counter()
    labels = fit()
    seconds = time.perf_counter() - start
    peak = _rss_kib("VmHWM") - before
    return {"seconds": seconds, "peak_mib": peak / 1024, "accuracy": float((labels == truth).mean())}


def synthetic(count: int) -> None:
    rows = {}
    for library in ("ours", "crowd-kit"):
        output = subprocess.run(
            [sys.executable, __file__, "--fit-one", library, "--votes", str(count)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows[library] = json.loads(output.strip().splitlines()[-1])
    print(f"\nDawid–Skene on {count:,} synthetic votes (1 process each)")
    print(f"{'library':<12} {'seconds':>8} {'peak MiB':>9} {'accuracy':>9}")
    for library, row in rows.items():
        print(f"{library:<12} {row['seconds']:>8.2f} {row['peak_mib']:>9.0f} {row['accuracy']:>9.4f}")
    ours, theirs = rows["ours"], rows["crowd-kit"]
    print(
        f"speed-up {theirs['seconds'] / ours['seconds']:.1f}×, memory {ours['peak_mib'] / theirs['peak_mib']:.2f} of "
        f"crowd-kit's, accuracy {ours['accuracy'] - theirs['accuracy']:+.6f}"
    )


def votes_csv(count: int, path: Path) -> np.ndarray:
    """The synthetic votes as the CSV ``lsun-crowd aggregate`` reads; returns the truth by item."""
    import pyarrow as pa
    import pyarrow.csv as arrow_csv

    item, worker, answer, truth = synthetic_votes(count)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(item))
    alphabet = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"))
    worker_ids = np.array(["A" + "".join(rng.choice(alphabet, 13)) for _ in range(int(worker.max()) + 1)])
    questions = pa.array(np.char.add("img_", np.char.zfill(item[order].astype(str), 7)))
    table = pa.table({"question": questions, "worker": worker_ids[worker[order]], "answer": answer[order]})
    with path.open("wb") as handle:
        handle.write(b"question,worker,answer\n")
        arrow_csv.write_csv(table, handle, arrow_csv.WriteOptions(include_header=False, quoting_style="none"))
    return truth


def crowd_kit_csv(votes: Path, out: Path) -> None:
    """crowd-kit's way from a vote CSV to a label CSV (runs inside a fresh process)."""
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    frame = pd.read_csv(votes).rename(columns={"question": "task", "answer": "label"})
    model = DawidSkene(n_iter=100)
    labels = model.fit_predict(frame)
    model.probas_.assign(label=labels).to_csv(out, index_label="question")


# Runs one command and reports its wall time and its own peak resident memory. It runs in a
# small interpreter of its own: a child forked straight from this script would start out
# sharing this script's pages, and its peak would count them.
MEASURE = """
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
seconds = time.perf_counter() - start
print(json.dumps({"status": status, "seconds": seconds, "peak_mib": usage.ru_maxrss / 1024}))
"""


def measured(command: list[str]) -> dict[str, float]:
    """Wall seconds and peak resident MiB of one command, in its own process."""
    row = json.loads(subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, check=True).stdout)
    if row.pop("status") != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return row


def label_accuracy(path: Path, truth: np.ndarray) -> float:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as arrow_csv

    table = arrow_csv.read_csv(path).select(["question", "label"])
    item = pc.utf8_slice_codeunits(table.column("question"), 4).cast(pa.int64()).to_numpy()
    return float((table.column("label").to_numpy() == truth[item]).mean())


def end_to_end(count: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        votes, ours_out, theirs_out = Path(folder) / "votes.csv", Path(folder) / "ours.csv", Path(folder) / "theirs.csv"
        truth = votes_csv(count, votes)
        commands = {
            "lsun-crowd aggregate": [
                str(Path(sys.executable).with_name("lsun-crowd")),
                "aggregate",
                str(votes),
                "--out",
                str(ours_out),
            ],
            "crowd-kit DawidSkene": [sys.executable, __file__, "--crowd-kit-csv", str(votes), str(theirs_out)],
        }
        runs = [{name: measured(command) for name, command in commands.items()} for _ in range(repeat)]
        accuracy = {"lsun-crowd aggregate": label_accuracy(ours_out, truth)}
        accuracy["crowd-kit DawidSkene"] = label_accuracy(theirs_out, truth)
        size = votes.stat().st_size / 2**20
    print(f"\nEnd to end, CSV ({size:.0f} MiB, {count:,} votes) to labels CSV, each a fresh process")
    print(f"{'run':<4} {'command':<22} {'seconds':>8} {'peak MiB':>9} {'accuracy':>9}")
    for index, run in enumerate(runs, 1):
        for name, row in run.items():
            print(f"{index:<4} {name:<22} {row['seconds']:>8.2f} {row['peak_mib']:>9.0f} {accuracy[name]:>9.4f}")
        ours, theirs = run["lsun-crowd aggregate"], run["crowd-kit DawidSkene"]
        print(
            f"     {theirs['seconds'] / ours['seconds']:.1f}× faster, "
            f"{ours['peak_mib'] / theirs['peak_mib']:.2f} of crowd-kit's peak memory"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--votes", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="end-to-end runs, ours then theirs each time")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--fit-one", choices=["ours", "crowd-kit"], help=argparse.SUPPRESS)
    parser.add_argument("--crowd-kit-csv", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit_one:
        print(json.dumps(fit_one(args.fit_one, args.votes)))
        return
    if args.crowd_kit_csv:
        crowd_kit_csv(*args.crowd_kit_csv)
        return
    if not args.skip_real:
        real_sets()
    if not args.skip_synthetic:
        synthetic(args.votes)
    if not args.skip_end_to_end:
        end_to_end(args.votes, args.repeat)


if __name__ == "__main__":
    main()
