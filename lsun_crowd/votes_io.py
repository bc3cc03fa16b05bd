"""Vote and label files of ``lsun-crowd aggregate``: ``question,worker,answer`` in, and
``question,label,confidence,p_<class>…`` out. A malformed row fails with its line number.

Both directions run in Arrow's C++ and numpy, with no Python loop over rows: millions of votes
made as many Python objects would cost more time and memory than the fit itself. Arrow parses the
file and factorises each column into its distinct values (in order of first appearance, as a
row-by-row reader would number them); checks run on whole columns. Line numbers are what a
columnar parse does not keep, so they are found only on the way to an error: the file is read
again row by row up to its first bad row, and the message is the one that row deserves.

What a file from elsewhere may hold, and what becomes of it:

- a UTF-8 byte-order mark (Excel's "CSV UTF-8") and headers in any case (``Question``) are read;
- a field longer than :data:`MAX_FIELD_CHARACTERS`, text that is not UTF-8, and an answer that
  Python's ``int`` reads but that is not written as a plain integer (``1_0``, ``١``) are refused
  with their line;
- worker ids are normalised (Unicode NFKC, invisible format characters removed:
  :mod:`lsun_crowd.worker_ids`), with a warning saying how many changed;
- a worker's repeated votes on one question count once: the first is kept, and a warning says how
  many were dropped (and how many of those disagreed with it), so that no worker outvotes others
  by answering twice.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as arrow_csv
from numpy.typing import NDArray

from lsun_crowd.aggregate import Posterior, Votes
from lsun_crowd.outputs import atomic_file
from lsun_crowd.worker_ids import normal_worker_id

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
MAX_FIELD_CHARACTERS = 4096  # a question may be a path or a URL: 4,096 is Linux's PATH_MAX
UTF8_CHECK_BYTES = 1 << 20
PLAIN_INTEGER = re.compile(r"[+-]?[0-9]+")
WORKER = VOTE_COLUMNS.index("worker")
ANSWER = VOTE_COLUMNS.index("answer")
Warn = Callable[[str], None]
logger = logging.getLogger(__name__)


class VotesFileError(ValueError):
    pass


def read_votes(path: Path, warn: Warn | None = None) -> Votes:
    """Votes from a CSV. Every cell is stripped of surrounding blanks; a row with every cell
    blank is skipped, as are empty lines. Answers that are all integers are read as integers,
    otherwise as text; classes are the answers seen, sorted. Questions and workers are numbered
    in order of first appearance. What is normalised or dropped (see the module) is told to
    ``warn`` (default: this module's logger)."""
    say = warn or logger.warning
    _read_header(path)
    _check_utf8(path)
    try:
        table = arrow_csv.read_csv(
            path,
            # One thread: every block is then allocated by this thread's heap, which hands its
            # pages back when asked (a worker thread's keeps them), and two shared cores gain
            # little from parsing in parallel. The header is ours, once checked: Arrow skips it.
            read_options=arrow_csv.ReadOptions(use_threads=False, column_names=list(VOTE_COLUMNS), skip_rows=1),
            parse_options=arrow_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=_skip_blank_row),
            convert_options=arrow_csv.ConvertOptions(
                column_types=dict(zip(VOTE_COLUMNS, COLUMN_TYPES, strict=True)),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        ).unify_dictionaries()
    except pa.ArrowInvalid as error:
        raise _first_bad_row(path) or VotesFileError(f"{path}: {error}") from None
    coded: list[Column] = []
    for name in VOTE_COLUMNS:
        column = table.column(name)
        if not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()  # one dictionary, shared by every chunk
        # The column's text is let go as soon as it is coded, and Arrow's allocator hands its
        # pages back: numpy's arrays come from another allocator, which could not reuse them.
        table = table.drop_columns([name])
        coded.append(_distinct_codes(column))
        del column
        pa.default_memory_pool().release_unused()
    coded[WORKER] = _normal_workers(coded[WORKER], say)
    columns = _drop_blank_rows(path, coded)
    _check_lengths(path, columns)
    (items, item_codes), (workers, worker_codes), (answers, answer_codes) = columns
    if len(item_codes) == 0:
        raise VotesFileError(f"{path}: no votes")
    first = _first_votes(item_codes, worker_codes, answer_codes, len(workers), say)
    if first is not None:
        item_codes, worker_codes, answer_codes = item_codes[first], worker_codes[first], answer_codes[first]
        answers, answer_codes = _used(answers, answer_codes)
    classes, class_of_answer = _classes(path, answers.to_pylist())
    return Votes(
        tuple(items.to_pylist()),
        tuple(workers.to_pylist()),
        classes,
        item_codes,
        worker_codes,
        class_of_answer[answer_codes],
    )


def _read_header(path: Path) -> None:
    """Checks that the header names our columns: in this order, in any case, after a UTF-8
    byte-order mark if there is one."""
    if not path.is_file():
        raise VotesFileError(f"{path}: no such file")
    # Bytes that are not UTF-8 further on are the rows' business (``_first_bad_row``), not the header's.
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        try:
            header = next(csv.reader(handle), None)
        except csv.Error as error:
            raise VotesFileError(f"{path}:1: the header is not a CSV row: {error}") from None
    if header is not None and any(_undecoded(column) for column in header):
        raise VotesFileError(f"{path}:1: not UTF-8 text (save the file as CSV UTF-8)")
    if header is None or tuple(column.strip().casefold() for column in header) != VOTE_COLUMNS:
        shown = [column[:40] for column in header or []][:5]
        raise VotesFileError(f"{path}:1: the header must be {','.join(VOTE_COLUMNS)}, not {shown}")


def _check_utf8(path: Path) -> None:
    """Refuses a file that is not UTF-8 before Arrow reads it: Arrow would hand a malformed row's
    bytes to :func:`_skip_blank_row` through a decoding that fails outside any caller's reach.
    An incremental decoder, a megabyte at a time, in C: a fraction of the parse's time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as handle:
        try:
            while chunk := handle.read(UTF8_CHECK_BYTES):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise _first_bad_row(path) or VotesFileError(f"{path}: not UTF-8 text") from None


def _undecoded(text: str) -> bool:
    """Whether ``text`` holds bytes that were not UTF-8 (kept as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _normal_workers(column: Column, say: Warn) -> Column:
    """Worker ids in normal form (:func:`normal_worker_id`); ids that become one are one worker."""
    values, codes = column
    written = values.to_pylist()
    normal = [normal_worker_id(value) for value in written]
    changed = sum(before != after for before, after in zip(written, normal, strict=True))
    if not changed:
        return column
    distinct = list(dict.fromkeys(normal))
    position = {value: index for index, value in enumerate(distinct)}
    merged = len(written) - len(distinct)
    say(
        f"{changed} worker id(s) held invisible or look-alike characters and were normalised "
        f"(Unicode NFKC, format characters removed); {merged} of them now name a worker seen under another id"
    )
    remap = np.array([position[value] for value in normal], dtype=np.int64)
    return pa.array(distinct, pa.string()), remap[codes]


def _check_lengths(path: Path, columns: list[Column]) -> None:
    for name, (values, _) in zip(VOTE_COLUMNS, columns, strict=True):
        if len(values) and pc.max(pc.utf8_length(values)).as_py() > MAX_FIELD_CHARACTERS:
            raise _first_bad_row(path) or VotesFileError(
                f"{path}: a {name} is longer than {MAX_FIELD_CHARACTERS:,} characters"
            )


def _first_votes(
    item_codes: NDArray[np.int64],
    worker_codes: NDArray[np.int64],
    answer_codes: NDArray[np.int64],
    workers: int,
    say: Warn,
) -> NDArray[np.bool_] | None:
    """Which votes to keep when a worker answered one question more than once (the first of
    each), or ``None`` when none did."""
    # A plain sort (numpy's vectorised one) finds out whether any pair repeats at a tenth of the
    # cost of a hash table or a stable argsort; only a file with repeats pays for an argsort, and
    # each pair's first vote is the least position among its equals.
    pairs = item_codes * max(workers, 1) + worker_codes
    ordered = np.sort(pairs)
    if not np.any(ordered[1:] == ordered[:-1]):
        return None
    order = np.argsort(pairs)
    starts = np.ones(len(pairs), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    first = np.minimum.reduceat(order, np.flatnonzero(starts))
    keep = np.zeros(len(pairs), dtype=bool)
    keep[first] = True
    first_answer = answer_codes[first][np.cumsum(starts) - 1]
    differs = int(np.count_nonzero(answer_codes[order] != first_answer))
    repeated = len(pairs) - len(first)
    say(
        f"{repeated} repeated vote(s) by a worker on a question they had already answered were "
        f"dropped, the first of each kept ({differs} of them disagreed with it)"
    )
    return keep


def _used(values: pa.StringArray, codes: NDArray[np.int64]) -> Column:
    """Only the values some code still points at (answers given only in dropped votes go)."""
    used = np.zeros(len(values), dtype=bool)
    used[codes] = True
    if used.all():
        return values, codes
    renumbered = np.cumsum(used) - 1
    return values.filter(pa.array(used)), renumbered[codes]


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


def _classes(path: Path, answers: list[str]) -> tuple[tuple[Hashable, ...], NDArray[np.int64]]:
    """The classes, as integers if every answer is a plain one, sorted; and the class of each
    distinct answer ("01" and "1" are one class). An answer ``int`` reads that is not written as
    a plain integer (``1_0`` would be 10) is refused."""
    for answer in answers:
        if not PLAIN_INTEGER.fullmatch(answer) and _reads_as_integer(answer):
            line = _line_where(path, ANSWER, answer)
            where = f"{path}:{line}" if line is not None else str(path)
            raise VotesFileError(f"{where}: answer {answer!r} is not written as a plain integer (digits 0-9)")
    values: list[Hashable]
    if all(PLAIN_INTEGER.fullmatch(answer) for answer in answers):
        values = [int(answer) for answer in answers]
    else:
        values = list(answers)
    classes = tuple(sorted(set(values), key=lambda value: (isinstance(value, str), value)))
    position = {label: index for index, label in enumerate(classes)}
    return classes, np.array([position[value] for value in values], dtype=np.int64)


def _reads_as_integer(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _line_where(path: Path, column: int, value: str) -> int | None:
    """The line of the first row whose cell in ``column`` is ``value`` (stripped)."""
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        line = reader.line_num + 1
        try:
            for row in reader:
                if len(row) > column and row[column].strip() == value:
                    return line
                line = reader.line_num + 1
        except csv.Error:
            return None
    return None


def _first_bad_row(path: Path) -> VotesFileError | None:
    """The first malformed row, found by reading the file again row by row with the checks a
    row-by-row reader makes. A row spanning lines (a quoted newline) is named by its first line."""
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
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
            if "field limit" in str(error):
                return VotesFileError(f"{path}:{line}: a field is longer than {MAX_FIELD_CHARACTERS:,} characters")
            return VotesFileError(f"{path}:{line}: {error}")
    return None


def _row_problem(row: list[str]) -> str | None:
    if len(row) != len(VOTE_COLUMNS):
        return f"expected 3 fields (question,worker,answer), got {len(row)}"
    for name, value in zip(VOTE_COLUMNS, row, strict=True):
        if not (normal_worker_id(value) if name == "worker" else value.strip()):
            return f"{name} is empty"
        if len(value.strip()) > MAX_FIELD_CHARACTERS:
            return f"{name} is {len(value.strip()):,} characters long; at most {MAX_FIELD_CHARACTERS:,}"
    if _undecoded("".join(row)):
        return "not UTF-8 text"
    return None


def write_labels(path: Path, posterior: Posterior) -> int:
    """One row per question: the most probable label, its probability, and every class's, to six
    decimals; quoted and ended (``\\r\\n``) as Python's ``csv`` module writes them."""
    labels, confidence = posterior.labels(), posterior.confidence()
    class_names = pa.array([str(label) for label in posterior.classes], pa.string())
    header = io.StringIO()
    csv.writer(header).writerow(["question", "label", "confidence", *(f"p_{label}" for label in posterior.classes)])
    with atomic_file(path, "wb") as handle:
        _write_rows(handle, header.getvalue(), posterior, labels, confidence, class_names)
    return len(posterior.items)


def _write_rows(
    handle: IO[bytes],
    header: str,
    posterior: Posterior,
    labels: NDArray[np.int64],
    confidence: NDArray[np.float64],
    class_names: pa.StringArray,
) -> None:
    rows_per_batch = max(1, CELLS_PER_BATCH // (len(posterior.classes) + 3))
    handle.write(header.encode("utf-8"))
    for start in range(0, len(posterior.items), rows_per_batch):
        rows = slice(start, start + rows_per_batch)
        cells = [
            _quoted(_text(posterior.items[rows])),
            _quoted(class_names.take(labels[rows])),
            _six_decimals(confidence[rows]),
            *(_six_decimals(posterior.probabilities[rows, index]) for index in range(len(posterior.classes))),
        ]
        handle.write(_lines(cells))


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
