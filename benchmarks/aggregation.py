"""Our aggregators against crowd-kit's, side by side in one run.

    pip install -r benchmarks/requirements.txt
    python benchmarks/aggregation.py [--votes 5000000] [--skip-real] [--skip-synthetic]

1. Accuracy on the real vote sets in ../shared/data/crowd_votes (duck, product) against truth.csv.
2. Dawid–Skene on synthetic votes (1,000,000 items × 5 votes, 2,000 workers, accuracies uniform
   in 0.55–0.95): fit time, peak memory during the fit, and accuracy. Each library fits in a
   fresh process; the peak is the growth of resident memory over the fit (Linux VmHWM, reset
   after the votes are built), so building the input is not counted for either.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--votes", type=int, default=5_000_000)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--fit-one", choices=["ours", "crowd-kit"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit_one:
        print(json.dumps(fit_one(args.fit_one, args.votes)))
        return
    if not args.skip_real:
        real_sets()
    if not args.skip_synthetic:
        synthetic(args.votes)


if __name__ == "__main__":
    main()
