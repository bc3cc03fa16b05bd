"""The columnar vote reader and label writer against the row-by-row ``csv`` code they replace:
the same votes in, the same bytes out, and bad rows named by their line however far in."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lsun_crowd.aggregate import Posterior, Votes
from lsun_crowd.cli import app
from lsun_crowd.votes_io import VotesFileError, read_votes, write_labels

from .conftest import SHARED_DATA

CROWD_VOTES = SHARED_DATA / "crowd_votes"


def row_by_row(path: Path) -> Votes:
    """What ``read_votes`` did before it was columnar: every row through Python's ``csv``."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [[cell.strip() for cell in row] for row in list(csv.reader(handle))[1:]]
    triples = [tuple(row) for row in rows if any(row)]
    answers: list[Hashable]
    try:
        answers = [int(answer) for _, _, answer in triples]
    except ValueError:
        answers = [answer for _, _, answer in triples]
    classes = sorted(set(answers), key=lambda value: (isinstance(value, str), value))
    return Votes.from_triples(
        [(question, worker, answer) for (question, worker, _), answer in zip(triples, answers, strict=True)],
        classes=classes,
    )


def assert_same_votes(got: Votes, expected: Votes) -> None:
    assert (got.items, got.workers, got.classes) == (expected.items, expected.workers, expected.classes)
    for field in ("item_index", "worker_index", "answer_index"):
        assert getattr(got, field).dtype == np.int64
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))


@pytest.mark.parametrize("name", ["duck", "product"])
def test_real_vote_sets_read_as_row_by_row(name: str) -> None:
    path = CROWD_VOTES / name / "answers.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared data is not checked out beside the project)")
    votes = read_votes(path)
    assert_same_votes(votes, row_by_row(path))
    assert len(votes.item_index) == sum(1 for _ in path.open()) - 1


def test_blanks_quotes_and_line_breaks_read_as_row_by_row(tmp_path: Path) -> None:
    path = tmp_path / "v.csv"
    path.write_text(
        " question , worker,answer\n"
        "q1, ann ,01\n"
        "\n"
        "  \n"
        ",,\n"
        " , ,,\n"
        '"q,2",bob,1\n'
        '"q ""3""","b\nob",0\n'
        " q1,cy,2\r\n"
        "q4,ann, 1 \n"
    )
    votes = read_votes(path)
    assert_same_votes(votes, row_by_row(path))
    assert votes.items == ("q1", "q,2", 'q "3"', "q4")
    assert votes.workers == ("ann", "bob", "b\nob", "cy")
    assert votes.classes == (0, 1, 2)  # "01" and "1" are one class
    assert votes.answer_index.tolist() == [1, 1, 0, 2, 1]


def test_text_answers_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "v.csv"
    path.write_text("question,worker,answer\na,w,dog\nb,w,10\nc,w,cat\n")
    votes = read_votes(path)
    assert votes.classes == ("10", "cat", "dog")
    assert votes.answer_index.tolist() == [2, 0, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("question,worker,answer\n,,\n  \n", "v.csv: no votes"),
        ("question,worker,answer\nq1,w1,1\nq2,w2,1,x\n", "v.csv:3: expected 3 fields (question,worker,answer), got 4"),
        ("question,worker,answer\nq1,w1, \n", "v.csv:2: answer is empty"),
        # A row that spans lines is named by its first line, and moves the lines after it.
        ('question,worker,answer\n"q\n1",w1\nq2,w2,1\n', "v.csv:2: expected 3 fields"),
        ('question,worker,answer\n"q\n1",w1,0\nq2,,1\n', "v.csv:4: worker is empty"),
    ],
)
def test_bad_rows_name_their_first_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "v.csv"
    path.write_text(text)
    with pytest.raises(VotesFileError) as raised:
        read_votes(path)
    assert str(raised.value).startswith(str(tmp_path / message.split(":")[0]))
    assert message in str(raised.value)


def many_votes(path: Path, rows: int, bad_line: int, bad_row: str) -> Path:
    """``rows`` votes; line ``bad_line`` (the header is line 1) replaced by ``bad_row``."""
    lines = ["question,worker,answer", *(f"img_{i:07d},w{i % 997},{i % 2}" for i in range(rows))]
    lines[bad_line - 1] = bad_row
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("img_x,w1", "v.csv:150001: expected 3 fields (question,worker,answer), got 2"),
        ("img_x,,1", "v.csv:150001: worker is empty"),
        ("img_x,w1,", "v.csv:150001: answer is empty"),
    ],
)
def test_a_bad_row_far_into_a_large_file(tmp_path: Path, bad_row: str, message: str) -> None:
    path = many_votes(tmp_path / "v.csv", 200_000, 150_001, bad_row)
    with pytest.raises(VotesFileError, match=re.escape(message)):
        read_votes(path)
    result = CliRunner().invoke(app, ["aggregate", str(path), "--out", str(tmp_path / "l.csv")])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "l.csv").exists()


def test_bytes_that_are_not_utf8_are_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "v.csv"
    path.write_bytes(b"question,worker,answer\nq1,w1,1\nq2,w\xff2,0\nq3,w3,1\n")
    with pytest.raises(VotesFileError, match=r"v\.csv:3: not UTF-8 text"):
        read_votes(path)


def csv_module_labels(posterior: Posterior) -> bytes:
    """What ``write_labels`` wrote before it was columnar: every row through Python's ``csv``."""
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow(["question", "label", "confidence", *(f"p_{label}" for label in posterior.classes)])
    labels, confidence = posterior.labels(), posterior.confidence()
    for index, question in enumerate(posterior.items):
        writer.writerow(
            [
                question,
                posterior.classes[labels[index]],
                f"{confidence[index]:.6f}",
                *(f"{p:.6f}" for p in posterior.probabilities[index]),
            ]
        )
    return handle.getvalue().encode("utf-8")


def posterior_of(items: tuple[Hashable, ...], classes: tuple[Hashable, ...], first: list[float]) -> Posterior:
    probabilities = np.array([[p, 1.0 - p] for p in first]) if len(classes) == 2 else np.array([first]).T
    return Posterior(items, classes, probabilities, {}, np.ones(len(items), dtype=np.int64))


def test_labels_are_byte_for_byte_what_the_csv_module_writes(tmp_path: Path) -> None:
    # Half-millionths that binary floats hold exactly (0.0078125 = 1/128) or nearly, both sides
    # of every rounding, 0, 1, a float just over 1, and questions that need quoting.
    first = [0.0078125, 0.0000005, 0.0000015, 0.1234565, 0.9999995, 0.4999994999, 0.0, 1.0, 1 / 3, 2 / 3]
    first += [math.nextafter(0.5, 1.0), 5e-7 - 1e-18, 1e-300, 0.25000050000000001]
    items: tuple[Hashable, ...] = tuple(f"q{i}" for i in range(len(first) - 4))
    items += ("has,comma", 'has "quotes"', "has\nbreak", "  spaced  ")
    for classes in [(0, 1), ("cat", 'd"og')]:
        posterior = posterior_of(items, classes, first)
        write_labels(tmp_path / "l.csv", posterior)
        assert (tmp_path / "l.csv").read_bytes() == csv_module_labels(posterior)
    nan = posterior_of(("a", "b"), ("x",), [float("nan"), 1.0000001])
    write_labels(tmp_path / "l.csv", nan)
    assert (tmp_path / "l.csv").read_bytes() == csv_module_labels(nan)


def test_random_probabilities_and_integer_questions_match_the_csv_module(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=20_000)
    probabilities[:1000] = np.round(probabilities[:1000], 7)  # many on a half-millionth
    posterior = Posterior(tuple(range(20_000)), (1, 2, 3), probabilities, {}, np.ones(20_000, dtype=np.int64))
    write_labels(tmp_path / "l.csv", posterior)
    assert (tmp_path / "l.csv").read_bytes() == csv_module_labels(posterior)
