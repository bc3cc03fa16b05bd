"""`lsun-crowd aggregate` on hand-made files and on the real crowd vote sets in ../shared/data."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lsun_crowd.cli import app
from lsun_crowd.methods import METHODS
from lsun_crowd.votes_io import VotesFileError, read_votes

from .conftest import SHARED_DATA

runner = CliRunner(env={"COLUMNS": "200"})
CROWD_VOTES = SHARED_DATA / "crowd_votes"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def labels(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as handle:
        return {row["question"]: row for row in csv.DictReader(handle)}


def test_string_answers_by_hand(tmp_path: Path) -> None:
    votes = write(tmp_path / "v.csv", "question,worker,answer\nq1,ann,cat\nq1,bob,cat\nq1,cy,dog\nq2,ann,dog\n")
    result = runner.invoke(app, ["aggregate", str(votes), "--method", "majority", "--out", str(tmp_path / "l.csv")])
    assert result.exit_code == 0, result.output
    rows = labels(tmp_path / "l.csv")
    assert list(next(iter(rows.values()))) == ["question", "label", "confidence", "p_cat", "p_dog"]
    assert rows["q1"]["label"] == "cat" and float(rows["q1"]["confidence"]) == pytest.approx(2 / 3)
    assert rows["q2"]["label"] == "dog" and float(rows["q2"]["p_dog"]) == 1.0


def test_integer_answers_sort_numerically(tmp_path: Path) -> None:
    votes = read_votes(write(tmp_path / "v.csv", "question,worker,answer\na,w,10\nb,w,2\nc,w,1\n"))
    assert votes.classes == (1, 2, 10)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("q,w,a\nx,y,z\n", "v.csv:1: the header must be question,worker,answer"),
        ("question,worker,answer\nq1,w1,1\nq2,w2\n", "v.csv:3: expected 3 fields"),
        ("question,worker,answer\nq1,w1,1\n\nq2,,0\n", "v.csv:4: worker is empty"),
        ("question,worker,answer\n", "v.csv: no votes"),
    ],
)
def test_malformed_rows_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "v.csv", text)
    with pytest.raises(VotesFileError, match=message):
        read_votes(path)
    result = runner.invoke(app, ["aggregate", str(path), "--out", str(tmp_path / "l.csv")])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "l.csv").exists()


def test_unknown_method(tmp_path: Path) -> None:
    votes = write(tmp_path / "v.csv", "question,worker,answer\nq,w,1\n")
    result = runner.invoke(app, ["aggregate", str(votes), "--method", "glad2", "--out", str(tmp_path / "l.csv")])
    assert result.exit_code == 2 and "--method must be one of majority, dawid-skene, one-coin" in result.output


def accuracy(name: str, method: str, tmp_path: Path) -> float:
    if not (CROWD_VOTES / name).is_dir():
        pytest.skip(f"{CROWD_VOTES / name} is absent (the shared data is not checked out beside the project)")
    out = tmp_path / f"{name}-{method}.csv"
    result = runner.invoke(
        app, ["aggregate", str(CROWD_VOTES / name / "answers.csv"), "--method", method, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    predicted = labels(out)
    with (CROWD_VOTES / name / "truth.csv").open() as handle:
        truth = {row["question"]: row["truth"] for row in csv.DictReader(handle)}
    return sum(predicted[q]["label"] == t for q, t in truth.items()) / len(truth)


@pytest.mark.parametrize(
    ("name", "method", "at_least"),
    [
        # Majority vote's published figures on these sets, then crowd-kit's Dawid–Skene (0.889, 0.940).
        ("duck", "majority", 0.759),
        ("product", "majority", 0.896),
        ("duck", "dawid-skene", 0.889),
        ("product", "dawid-skene", 0.9397),
        ("duck", "glad", 0.72),
        ("product", "glad", 0.899),
    ],
)
def test_accuracy_on_real_crowd_votes(name: str, method: str, at_least: float, tmp_path: Path) -> None:
    assert method in METHODS
    assert accuracy(name, method, tmp_path) >= at_least
