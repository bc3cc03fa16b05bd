"""Hostile vote files for ``read_votes`` and ``lsun-crowd aggregate``: every refusal is one line
naming the file and line, and what is normalised or dropped is said in a warning."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lsun_crowd.cli import app
from lsun_crowd.votes_io import VotesFileError, read_votes

runner = CliRunner(env={"COLUMNS": "200"})


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def aggregate(votes: Path, out: Path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["aggregate", str(votes), "--method", "majority", "--out", str(out)])
    return result.exit_code, result.stdout, result.stderr


def labels(path: Path) -> dict[str, str]:
    with path.open() as handle:
        return {row["question"]: row["label"] for row in csv.DictReader(handle)}


def test_out_naming_a_folder_is_one_line(tmp_path: Path) -> None:
    votes = write(tmp_path / "v.csv", "question,worker,answer\nq1,a,1\nq1,b,0\n")
    (tmp_path / "labels").mkdir()
    code, _, stderr = aggregate(votes, tmp_path / "labels")
    assert code == 2
    assert stderr == f"error: --out {tmp_path / 'labels'}: is a folder; name the labels CSV to write\n"
    # A missing folder is made, as every command that writes a file makes it.
    code, _, stderr = aggregate(votes, tmp_path / "missing" / "l.csv")
    assert code == 0 and (tmp_path / "missing" / "l.csv").is_file(), stderr
    # A place nobody may write (root ignores file modes; /proc refuses even root): one line, no partial file.
    unwritable = Path("/proc/lsun-crowd-test/l.csv")
    code, _, stderr = aggregate(votes, unwritable)
    assert code == 2 and stderr.startswith(f"error: {unwritable}: cannot make its folder ")
    assert len(stderr.splitlines()) == 1


@pytest.mark.parametrize("where", ["question", "worker", "answer", "header"])
def test_over_long_field_is_refused_with_its_line(tmp_path: Path, where: str) -> None:
    long = "x" * 200_000
    rows = {"question": f"{long},a,1", "worker": f"q2,{long},1", "answer": f"q2,a,{long}"}
    header = "question,worker,answer" + (long if where == "header" else "")
    votes = write(tmp_path / "v.csv", f"{header}\nq1,a,1\n{rows.get(where, 'q2,a,0')}\nq3,b,0\n")
    code, _, stderr = aggregate(votes, tmp_path / "l.csv")
    assert code == 2 and "Traceback" not in stderr and len(stderr.splitlines()) == 1
    line = 1 if where == "header" else 3
    assert stderr.startswith(f"error: {votes}:{line}: ")
    medium = write(tmp_path / "m.csv", f"question,worker,answer\nq1,a,1\nq2,{'w' * 5000},0\n")
    with pytest.raises(VotesFileError, match=r"m\.csv:3: worker is 5,000 characters long; at most 4,096"):
        read_votes(medium)


def test_non_utf8_votes_files_are_one_line(tmp_path: Path) -> None:
    utf16 = write(tmp_path / "u16.csv", "question,worker,answer\nq1,a,1\n".encode("utf-16"))
    code, _, stderr = aggregate(utf16, tmp_path / "l.csv")
    assert (code, stderr) == (2, f"error: {utf16}:1: not UTF-8 text (save the file as CSV UTF-8)\n")
    latin = write(tmp_path / "latin.csv", b"question,worker,answer\nq1,Jos\xe9,1\nq1,b,0\n")
    code, _, stderr = aggregate(latin, tmp_path / "l.csv")
    assert (code, stderr) == (2, f"error: {latin}:2: not UTF-8 text\n")


def test_excel_bom_and_header_case_are_read(tmp_path: Path) -> None:
    votes = write(tmp_path / "v.csv", "\ufeffQuestion, WORKER ,Answer\r\nq1,a,1\r\nq1,b,1\r\nq1,c,0\r\nq2,a,0\r\n")
    code, stdout, stderr = aggregate(votes, tmp_path / "l.csv")
    assert code == 0, stderr
    assert "4 votes by 3 workers" in stdout
    assert labels(tmp_path / "l.csv") == {"q1": "1", "q2": "0"}


def test_a_repeated_vote_counts_once_with_a_warning(tmp_path: Path) -> None:
    # Without the rule, w1's three "1"s outvote w2 and w3 on q1.
    votes = write(
        tmp_path / "v.csv",
        "question,worker,answer\nq1,w1,1\nq1,w2,0\nq1,w1,1\nq1,w3,0\nq1,w1,1\nq2,w1,1\nq2,w1,0\nq2,w2,0\n",
    )
    code, _, stderr = aggregate(votes, tmp_path / "l.csv")
    assert code == 0 and labels(tmp_path / "l.csv")["q1"] == "0"
    assert stderr.startswith(f"warning: {votes}: 3 repeated vote(s)")
    warnings: list[str] = []
    table = read_votes(votes, warn=warnings.append)
    assert len(table.item_index) == 5
    assert warnings == [
        "3 repeated vote(s) by a worker on a question they had already answered were dropped, "
        "the first of each kept (1 of them disagreed with it)"
    ]


def test_an_answer_only_in_a_dropped_vote_is_no_class(tmp_path: Path) -> None:
    votes = write(tmp_path / "v.csv", "question,worker,answer\nq1,a,cat\nq1,a,dog\nq2,b,cat\nq2,c,bird\n")
    assert read_votes(votes).classes == ("bird", "cat")


def test_worker_ids_are_normalised_with_a_warning(tmp_path: Path) -> None:
    # One worker written five ways: plain, a zero-width space, a BOM, a soft hyphen, full-width letters.
    ways = ["anna", "an\u200bna", "\ufeffanna", "an\u00adna", "\uff41\uff4e\uff4e\uff41"]
    rows = [f"q{index},{way},1" for index, way in enumerate(ways)] + ["q0,bob,0", "q9,carl\u200d,0"]
    votes = write(tmp_path / "v.csv", "question,worker,answer\n" + "\n".join(rows) + "\n")
    code, stdout, stderr = aggregate(votes, tmp_path / "l.csv")
    assert code == 0 and "7 votes by 3 workers" in stdout and "5 worker id(s)" in stderr
    warnings: list[str] = []
    table = read_votes(votes, warn=warnings.append)
    assert table.workers == ("anna", "bob", "carl")
    assert warnings == [
        "5 worker id(s) held invisible or look-alike characters and were normalised "
        "(Unicode NFKC, format characters removed); 4 of them now name a worker seen under another id"
    ]


def test_a_worker_id_of_invisible_characters_only_is_empty(tmp_path: Path) -> None:
    votes = write(tmp_path / "v.csv", "question,worker,answer\nq1,a,1\nq2,\u200b\u200b,0\n")
    with pytest.raises(VotesFileError, match=r"v\.csv:3: worker is empty"):
        read_votes(votes)


@pytest.mark.parametrize("answer", ["1_0", "\u0661", "1_000"])
def test_answers_python_reads_as_integers_must_be_plain(tmp_path: Path, answer: str) -> None:
    votes = write(tmp_path / "v.csv", f"question,worker,answer\nq1,a,1\nq1,b,0\nq2,a,{answer}\nq2,b,1\n")
    code, _, stderr = aggregate(votes, tmp_path / "l.csv")
    assert code == 2
    assert stderr == f"error: {votes}:4: answer {answer!r} is not written as a plain integer (digits 0-9)\n"
    plain = write(tmp_path / "p.csv", "question,worker,answer\nq1,a,+1\nq1,b,01\nq2,a,-1\n")
    assert read_votes(plain).classes == (-1, 1)
