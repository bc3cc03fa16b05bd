"""`lsun-crowd init`'s defaults on real image files, as a new user runs them.

A pool of distorted scikit-learn digit scans (16 px PNGs), two categories (one digit at about
11%, one rare digit at 1%), a small gold set, the simulated crowd and the `pixels` backbone at
16 px; every other setting is what `lsun-crowd init` writes, but for a budget of 500 USD and no
wait between polls (the simulated crowd answers at once). Prints, per category and in all: the
share of (image, category) pairs the model labeled, the share resolved, human votes per resolved
pair, and precision and recall against the truth (an unlabeled positive counts as missed).

python benchmarks/init_defaults.py [--items 20000] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import affine_transform, zoom
from sklearn.datasets import load_digits

COMMON, RARE = 3, 7  # the digits of the two categories
SHARES = {COMMON: 0.11, RARE: 0.01}
GOLD_PER_CLASS = 10
SIZE = 16


def distorted(pixels: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """One 8x8 scan upscaled to 16 px, rotated, sheared, shifted and noised."""
    image = zoom(pixels / 16.0, SIZE / 8, order=1)
    angle = generator.normal(0, 0.15)
    shear = generator.normal(0, 0.1)
    scale = generator.uniform(0.9, 1.1)
    matrix = np.array([[np.cos(angle), -np.sin(angle) + shear], [np.sin(angle), np.cos(angle)]]) / scale
    centre = np.array([SIZE / 2, SIZE / 2])
    offset = centre - matrix @ centre + generator.normal(0, 0.8, size=2)
    moved = affine_transform(image, matrix, offset=offset, order=1, mode="constant")
    noisy = moved + generator.normal(0, 0.06, size=moved.shape)
    return np.clip(noisy * 255, 0, 255).round().astype(np.uint8)


def draw_scans(items: int, generator: np.random.Generator) -> Iterator[tuple[int, np.ndarray]]:
    """``items`` distorted scans, each with its digit: digits drawn at :data:`SHARES` (the others
    evenly), each a random scan of that digit."""
    digits = load_digits()
    others = [digit for digit in range(10) if digit not in SHARES]
    weights = np.array([SHARES.get(digit, (1 - sum(SHARES.values())) / len(others)) for digit in range(10)])
    chosen = generator.choice(10, size=items, p=weights / weights.sum())
    by_digit = {digit: np.flatnonzero(digits.target == digit) for digit in range(10)}
    for digit in chosen.tolist():
        yield digit, distorted(digits.images[generator.choice(by_digit[digit])], generator)


def write_pool(out: Path, items: int, seed: int) -> dict[str, int]:
    """The images, the simulated crowd's truth and a gold set; returns each image's digit by path."""
    generator = np.random.default_rng(seed)
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    truth: dict[str, int] = {}
    for index, (digit, scan) in enumerate(draw_scans(items, generator)):
        path = (folder / f"{index:06d}.png").resolve()
        Image.fromarray(scan, mode="L").save(path)
        truth[str(path)] = digit
    categories = [f"digit-{COMMON}", f"digit-{RARE}"]
    with (out / "truth.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "category", "label"])
        for path, digit in truth.items():
            writer.writerows([path, category, int(digit == int(category[-1]))] for category in categories)
    paths = list(truth)
    with (out / "gold.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "category", "label"])
        for category in categories:
            digit = int(category[-1])
            for label in (1, 0):
                members = [path for path in paths if (truth[path] == digit) == bool(label)]
                for path in generator.choice(members, size=GOLD_PER_CLASS, replace=False):
                    writer.writerow([path, category, label])
    return truth


def configure(project: Path, truth_file: Path) -> None:
    """`lsun-crowd init`'s file with the benchmark's few lines changed."""
    path = project / "lsun-crowd.toml"
    text = path.read_text()
    changes = {
        "categories = []": f'categories = ["digit-{COMMON}", "digit-{RARE}"]',
        'backbone = "resnet18"': 'backbone = "pixels"',
        "image_size = 224": f"image_size = {SIZE}",
        "budget = 100.0": "budget = 500.0",
        "poll_seconds = 30": "poll_seconds = 0",
        "[crowd.settings]": f'[crowd.settings]\ntruth_file = "{truth_file}"',
    }
    for old, new in changes.items():
        if old not in text:
            raise SystemExit(f"lsun-crowd init no longer writes {old!r}: update this benchmark")
        text = text.replace(old, new, 1)
    path.write_text(text)


@dataclass
class Figures:
    category: str
    pairs: int = 0
    model: int = 0
    resolved: int = 0
    positives: int = 0
    labeled_positive: int = 0
    true_positive: int = 0

    @property
    def precision(self) -> float:
        return self.true_positive / self.labeled_positive if self.labeled_positive else 1.0

    @property
    def recall(self) -> float:
        return self.true_positive / self.positives if self.positives else 1.0


def score(export: Path, truth: dict[str, int]) -> dict[str, Figures]:
    figures: dict[str, Figures] = {}
    with export.open() as handle:
        for line in handle:
            row = json.loads(line)
            category = row["category"]
            figure = figures.setdefault(category, Figures(category))
            positive = truth[row["uri"]] == int(category[-1])
            figure.pairs += 1
            figure.positives += positive
            if row["label"] in ("positive", "negative"):
                figure.resolved += 1
                figure.model += row["source"] == "model"
            if row["label"] == "positive":
                figure.labeled_positive += 1
                figure.true_positive += positive
    return figures


def votes(project: Path) -> int:
    import sqlite3

    with sqlite3.connect(project / "lsun-crowd.db") as connection:
        return int(connection.execute("SELECT COUNT(*) FROM votes WHERE is_gold = 0").fetchone()[0])


def votes_by_stage(project: Path) -> dict[str, int]:
    """People's votes (gold answers aside) by what asked for them: the split rounds (a round's
    first votes and its follow-ups), certification, and repair."""
    import sqlite3

    query = """
        SELECT COALESCE(rounds.kind, jobs.kind), COUNT(*) FROM votes
        JOIN assignments ON assignments.id = votes.assignment_id
        JOIN hits ON hits.id = assignments.hit_id
        LEFT JOIN jobs ON jobs.id = hits.job_id
        LEFT JOIN rounds ON rounds.id = jobs.round_id
        WHERE votes.is_gold = 0 GROUP BY 1"""
    with sqlite3.connect(project / "lsun-crowd.db") as connection:
        return {str(stage): int(count) for stage, count in connection.execute(query)}


def run(out: Path, items: int, seed: int) -> dict[str, object]:
    command = [sys.executable, "-m", "lsun_crowd.cli"]
    truth = write_pool(out, items, seed)
    project = out / "project"
    subprocess.run([*command, "init", str(project)], check=True, capture_output=True)
    configure(project, out / "truth.csv")
    ingest = [*command, "ingest", "--project", str(project), "--gold", str(out / "gold.csv"), str(out / "images")]
    subprocess.run(ingest, check=True, capture_output=True)
    start = time.perf_counter()
    finished = subprocess.run([*command, "run", "--project", str(project)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (out / "run.log").write_text(finished.stdout + finished.stderr)  # every round's progress lines
    if finished.returncode != 0:
        raise SystemExit(f"run failed:\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}")
    export = out / "export.jsonl"
    subprocess.run([*command, "export", "--project", str(project), "--out", str(export)], check=True)
    figures = score(export, truth)
    pairs = sum(figure.pairs for figure in figures.values())
    resolved = sum(figure.resolved for figure in figures.values())
    cast = votes(project)
    return {
        "items": items,
        "seed": seed,
        "seconds": round(seconds, 1),
        "votes": cast,
        "votes_by_stage": votes_by_stage(project),
        "model_share": sum(figure.model for figure in figures.values()) / pairs,
        "resolved_share": resolved / pairs,
        "votes_per_resolved": cast / max(resolved, 1),
        "categories": {
            name: asdict(figure) | {"precision": figure.precision, "recall": figure.recall}
            for name, figure in figures.items()
        },
        "run_output": finished.stdout[-4000:],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the project here (default: a temporary folder)")
    args = parser.parse_args()
    if args.out is not None:
        result = run(args.out, args.items, args.seed)
    else:
        with tempfile.TemporaryDirectory() as folder:
            result = run(Path(folder), args.items, args.seed)
    print(result.pop("run_output"))
    print(json.dumps(result, indent=2))
    print(
        f"{args.items:,} images x 2 categories, seed {args.seed}: model labeled {result['model_share']:.1%} of the "
        f"pairs, {result['resolved_share']:.1%} resolved, {result['votes']:,} votes "
        f"({result['votes_per_resolved']:.3f} per resolved pair), {result['seconds']} s"
    )
    stages = ", ".join(f"{stage} {count:,}" for stage, count in result["votes_by_stage"].items())  # type: ignore[attr-defined]
    print(f"  votes by stage: {stages}")
    for name, figure in result["categories"].items():  # type: ignore[attr-defined]
        print(f"  {name}: precision {figure['precision']:.4f}, recall {figure['recall']:.4f}")


if __name__ == "__main__":
    main()
