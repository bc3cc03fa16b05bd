"""Vote and label files of ``lsun-crowd aggregate``: ``question,worker,answer`` in, and
``question,label,confidence,p_<class>…`` out. A malformed row fails with its line number.

Both directions run in Arrow's C++ and numpy, with no Python loop over rows: millions of votes
made as many Python objects would cost more time and memory than the fit itself. Arrow parses the
file and factorises each column into its distinct values (in order of first appearance, as a
row-by-row reader would number them); checks run on whole columns. Line numbers are what a
columnar parse does not keep, so they are found only on the way to an error: the file is read
again row by row up to its first bad row, and the message is the one that row deserves.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as arrow_csv
from numpy.typing import NDArray

from lsun_crowd.aggregate import Posterior, Votes

VOTE_COLUMNS = ("question", "worker", "answer")
# Questions are read as text and factorised once, by one hash table over the whole column: most
# of them are distinct, so Arrow's per-block dictionaries would each hold most of their block and
# merging them would hash every question twice. Workers and answers repeat, and per-block
# dictionaries keep them small from the start.
COLUMN_TYPES = (pa.string(), pa.dictionary(pa.int32(), pa.string()), pa.dictionary(pa.int32(), pa.string()))
Column = tuple[pa.StringArray, NDArray[np.int64]]  # distinct values, and each row's code into them
# Cells per batch of label rows formatted at once: bounds the memory of writing, whatever the
# number of classes, and keeps each batch's text far below Arrow's 2 GiB string limit.
CELLS_PER_BATCH = 1 << 20


class VotesFileError(ValueError):
    pass


def read_votes(path: Path) -> Votes:
    """Votes from a CSV. Every cell is stripped of surrounding blanks; a row with every cell
    blank is skipped, as are empty lines. Answers that are all integers are read as integers,
    otherwise as text; classes are the answers seen, sorted. Questions and workers are numbered
    in order of first appearance."""
    header = _read_header(path)
    try:
        table = arrow_csv.read_csv(
            path,
            # One thread: every block is then allocated by this thread's heap, which hands its
            # pages back when asked (a worker thread's keeps them), and two shared cores gain
            # little from parsing in parallel.
            read_options=arrow_csv.ReadOptions(use_threads=False),
            parse_options=arrow_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=_skip_blank_row),
            convert_options=arrow_csv.ConvertOptions(
                column_types=dict(zip(header, COLUMN_TYPES, strict=True)),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        ).unify_dictionaries()
    except pa.ArrowInvalid as error:
        raise _first_bad_row(path) or VotesFileError(f"{path}: {error}") from None
    coded: list[Column] = []
    for name in header:
        column = table.column(name)
        if not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()  # one dictionary, shared by every chunk
        # The column's text is let go as soon as it is coded, and Arrow's allocator hands its
        # pages back: numpy's arrays come from another allocator, which could not reuse them.
        table = table.drop_columns([name])
        coded.append(_distinct_codes(column))
        del column
        pa.default_memory_pool().release_unused()
    columns = _drop_blank_rows(path, coded)
    (items, item_codes), (workers, worker_codes), (answers, answer_codes) = columns
    if len(item_codes) == 0:
        raise VotesFileError(f"{path}: no votes")
    classes, class_of_answer = _classes(answers.to_pylist())
    return Votes(
        tuple(items.to_pylist()),
        tuple(workers.to_pylist()),
        classes,
        item_codes,
        worker_codes,
        class_of_answer[answer_codes],
    )


def _read_header(path: Path) -> list[str]:
    """The header as written (Arrow is told these exact names), once it is known to be ours."""
    if not path.is_file():
        raise VotesFileError(f"{path}: no such file")
    # Bytes that are not UTF-8 further on are the rows' business (``_first_bad_row``), not the header's.
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        header = next(csv.reader(handle), None)
    if header is None or tuple(column.strip() for column in header) != VOTE_COLUMNS:
        raise VotesFileError(f"{path}:1: the header must be {','.join(VOTE_COLUMNS)}, not {header}")
    return header


def _skip_blank_row(row: arrow_csv.InvalidRow) -> Literal["skip", "error"]:
    """A row of the wrong width is skipped if it is blank (a line of spaces, or of commas), as a
    row-by-row reader would; otherwise the parse fails and :func:`_first_bad_row` says where."""
    cells = next(csv.reader(io.StringIO(row.text)), [])
    return "skip" if all(not cell.strip() for cell in cells) else "error"


def _distinct_codes(column: pa.ChunkedArray) -> Column:
    """A dictionary-coded column (one dictionary in every chunk) as its distinct stripped values,
    in order of first appearance, and each row's code into them. Stripping happens on the
    distinct values, which are far fewer than rows."""
    if column.num_chunks == 0:
        return pa.array([], pa.string()), np.zeros(0, dtype=np.int64)
    values = column.chunk(0).dictionary
    codes = np.concatenate([_numpy(chunk.indices) for chunk in column.chunks], dtype=np.int64)
    stripped = pc.utf8_trim_whitespace(values)
    if not stripped.equals(values):  # " q1" and "q1" are one question
        merged = stripped.dictionary_encode()
        values = merged.dictionary
        codes = _numpy(merged.indices).astype(np.int64)[codes]
    return values, codes


def _numpy(integers: pa.Array) -> NDArray[np.signedinteger[Any]]:
    """An Arrow integer array without nulls as numpy, without a copy. ``Array.to_numpy`` (and any
    conversion from Python values) would import pandas where it is installed: 0.4 s and 40 MB."""
    values = np.frombuffer(integers.buffers()[1], dtype=f"<i{integers.type.bit_width // 8}")
    return values[integers.offset : integers.offset + len(integers)]


def _position_of_empty(values: pa.StringArray) -> int:
    empty = np.flatnonzero(_numpy(pc.utf8_length(values)) == 0)
    return int(empty[0]) if len(empty) else -1


def _drop_blank_rows(path: Path, columns: list[Column]) -> list[Column]:
    """Rows with every cell empty are dropped (and the empty value with them); a row with only
    some cells empty is an error."""
    empty_codes = [_position_of_empty(values) for values, _ in columns]
    if all(code < 0 for code in empty_codes):
        return columns
    empty = [codes == code for (_, codes), code in zip(columns, empty_codes, strict=True)]
    blank = np.logical_and.reduce(empty)
    partly = np.flatnonzero(np.logical_or.reduce(empty) & ~blank)
    if len(partly):
        row = int(partly[0])
        name = VOTE_COLUMNS[next(i for i, cells in enumerate(empty) if cells[row])]
        raise _first_bad_row(path) or VotesFileError(f"{path}: vote {row + 1}: {name} is empty")
    kept = []
    for (values, codes), code in zip(columns, empty_codes, strict=True):
        codes = codes[~blank]
        codes[codes > code] -= 1  # the empty value is gone from the distinct values
        kept.append((pa.concat_arrays([values[:code], values[code + 1 :]]), codes))
    return kept


def _classes(answers: list[str]) -> tuple[tuple[Hashable, ...], NDArray[np.int64]]:
    """The classes, as integers if every answer is one, sorted; and the class of each distinct
    answer ("01" and "1" are one class)."""
    values: list[Hashable]
    try:
        values = [int(answer) for answer in answers]
    except ValueError:
        values = list(answers)
    classes = tuple(sorted(set(values), key=lambda value: (isinstance(value, str), value)))
    position = {label: index for index, label in enumerate(classes)}
    return classes, np.array([position[value] for value in values], dtype=np.int64)


def _first_bad_row(path: Path) -> VotesFileError | None:
    """The first malformed row, found by reading the file again row by row with the checks a
    row-by-row reader makes. A row spanning lines (a quoted newline) is named by its first line."""
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)  # the header, checked already
        line = reader.line_num + 1
        try:
            for row in reader:
                if row and not all(not cell.strip() for cell in row):
                    problem = _row_problem(row)
                    if problem is not None:
                        return VotesFileError(f"{path}:{line}: {problem}")
                line = reader.line_num + 1
        except csv.Error as error:
            return VotesFileError(f"{path}:{line}: {error}")
    return None


def _row_problem(row: list[str]) -> str | None:
    if len(row) != len(VOTE_COLUMNS):
        return f"expected 3 fields (question,worker,answer), got {len(row)}"
    for name, value in zip(VOTE_COLUMNS, row, strict=True):
        if not value.strip():
            return f"{name} is empty"
    try:
        "".join(row).encode("utf-8")  # undecodable bytes were kept as lone surrogates
    except UnicodeEncodeError:
        return "not UTF-8 text"
    return None


def write_labels(path: Path, posterior: Posterior) -> int:
    """One row per question: the most probable label, its probability, and every class's, to six
    decimals; quoted and ended (``\\r\\n``) as Python's ``csv`` module writes them."""
    labels, confidence = posterior.labels(), posterior.confidence()
    class_names = pa.array([str(label) for label in posterior.classes], pa.string())
    header = io.StringIO()
    csv.writer(header).writerow(["question", "label", "confidence", *(f"p_{label}" for label in posterior.classes)])
    rows_per_batch = max(1, CELLS_PER_BATCH // (len(posterior.classes) + 3))
    temporary = path.with_name(path.name + ".partial")
    with temporary.open("wb") as handle:
        handle.write(header.getvalue().encode("utf-8"))
        for start in range(0, len(posterior.items), rows_per_batch):
            rows = slice(start, start + rows_per_batch)
            cells = [
                _quoted(_text(posterior.items[rows])),
                _quoted(class_names.take(labels[rows])),
                _six_decimals(confidence[rows]),
                *(_six_decimals(posterior.probabilities[rows, index]) for index in range(len(posterior.classes))),
            ]
            handle.write(_lines(cells))
    temporary.replace(path)
    return len(posterior.items)


def _text(values: Sequence[Hashable]) -> pa.StringArray:
    try:
        return pa.array(values, pa.string())
    except pa.ArrowTypeError:  # questions that are not text (numbers from another reader)
        return pa.array([str(value) for value in values], pa.string())


def _quoted(text: pa.StringArray) -> pa.StringArray:
    """Quoted where Python's ``csv`` (QUOTE_MINIMAL) would: a comma, a quote or a line break."""
    needs = pc.match_substring_regex(text, r'[,"\r\n]')
    if not pc.any(needs).as_py():
        return text
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, text)


def _six_decimals(values: NDArray[np.float64]) -> pa.StringArray:
    """``f"{value:.6f}"`` for every value, from integer millionths. For values up to 2 the product
    by a million is within 3e-10 of the exact one, so rounding it differs from rounding the exact
    decimal only that close to a half-millionth; values within 1e-6 of one (and non-finite,
    negative or larger values) go through Python's formatting, which rounds the exact decimal."""
    millionths = values * 1e6
    exact = (
        np.isfinite(values)
        & ~np.signbit(values)
        & (values <= 2.0)
        & (np.abs(millionths - np.floor(millionths) - 0.5) > 1e-6)
    )
    units = np.where(exact, np.rint(millionths), 0.0).astype(np.int64)
    whole = pa.array(units // 1_000_000).cast(pa.string())
    fraction = pc.utf8_lpad(pa.array(units % 1_000_000).cast(pa.string()), width=6, padding="0")
    text = pc.binary_join_element_wise(whole, fraction, ".")
    if exact.all():
        return text
    inexact = ~exact
    return pc.replace_with_mask(text, pa.array(inexact), pa.array([f"{value:.6f}" for value in values[inexact]]))


def _lines(cells: list[pa.StringArray]) -> memoryview:
    """The rows' bytes, comma-joined and ``\\r\\n``-ended: the value buffer of one string array."""
    lines = pc.binary_join_element_wise(pc.binary_join_element_wise(*cells, ","), "", "\r\n")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return memoryview(lines.buffers()[2])[offsets[0] : offsets[-1]]
