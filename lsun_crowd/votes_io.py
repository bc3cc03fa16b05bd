"""Vote and label files of ``lsun-crowd aggregate``: ``question,worker,answer`` in, and
``question,label,confidence,p_<class>…`` out. A malformed row fails with its line number."""

from __future__ import annotations

import csv
from collections.abc import Hashable
from pathlib import Path

from lsun_crowd.aggregate import Posterior, Votes

VOTE_COLUMNS = ("question", "worker", "answer")


class VotesFileError(ValueError):
    pass


def read_votes(path: Path) -> Votes:
    """Votes from a CSV. Answers that are all integers are read as integers, otherwise as text;
    classes are the answers seen, sorted."""
    if not path.is_file():
        raise VotesFileError(f"{path}: no such file")
    triples: list[tuple[str, str, str]] = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(column.strip() for column in header) != VOTE_COLUMNS:
            raise VotesFileError(f"{path}:1: the header must be {','.join(VOTE_COLUMNS)}, not {header}")
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(VOTE_COLUMNS):
                raise VotesFileError(f"{path}:{line}: expected 3 fields (question,worker,answer), got {len(row)}")
            question, worker, answer = (cell.strip() for cell in row)
            for name, value in zip(VOTE_COLUMNS, (question, worker, answer), strict=True):
                if not value:
                    raise VotesFileError(f"{path}:{line}: {name} is empty")
            triples.append((question, worker, answer))
    if not triples:
        raise VotesFileError(f"{path}: no votes")
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


def write_labels(path: Path, posterior: Posterior) -> int:
    """One row per question: the most probable label, its probability, and every class's."""
    labels, confidence = posterior.labels(), posterior.confidence()
    temporary = path.with_name(path.name + ".partial")
    with temporary.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "label", "confidence", *(f"p_{label}" for label in posterior.classes)])
        for index, question in enumerate(posterior.items):
            writer.writerow(
                [
                    question,
                    posterior.classes[labels[index]],
                    f"{confidence[index]:.6f}",
                    *(f"{p:.6f}" for p in posterior.probabilities[index]),
                ]
            )
    temporary.replace(path)
    return len(posterior.items)
