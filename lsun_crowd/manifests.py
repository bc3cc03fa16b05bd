"""Where ingest finds image references: a folder's files, or a manifest's lines.

Every problem with one entry (a line that is not UTF-8, not JSON, nested too deeply, too long, a
path that cannot be resolved, a broken link) becomes that entry's rejection, named ``FILE:LINE``
or by its path, and every other entry is still read. Only a source that cannot be read at all
raises :class:`IngestError`.

Links in a folder: a link to a file is followed wherever it points, inside the folder or out
of it, and the image is recorded by its target's path. A link to a folder is not followed (so
no loop can form); it is reported, and naming its target as a source ingests it. Loops and
dangling links are reported.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
MANIFEST_SUFFIXES = frozenset({".txt", ".csv", ".jsonl"})
URL_SCHEMES = frozenset({"http", "https", "file"})
PATH_COLUMNS = ("uri", "path", "url")
MAX_REFERENCE_CHARACTERS = 4096  # Linux's PATH_MAX, and the longest URL browsers and servers agree on
MAX_LINE_BYTES = 1 << 20  # a .txt or .jsonl line; a longer one is rejected without being held whole
BOM = "\ufeff"


class IngestError(ValueError):
    """A source cannot be read at all (a missing folder, a manifest that is not a manifest)."""


@dataclass(frozen=True)
class Candidate:
    """A reference to an image and where it came from (``FILE:LINE`` or a path); ``problem`` is
    set, and ``reference`` empty, when the entry names no image that can be read."""

    reference: str
    origin: str
    problem: str | None = None


def is_url(reference: str) -> bool:
    return urllib.parse.urlparse(reference).scheme in URL_SCHEMES


def candidates(source: Path) -> Iterator[Candidate]:
    """Every image reference a folder or manifest holds, in a stable order."""
    if source.is_dir():
        yield from _folder(source)
    elif source.is_file() and source.suffix.lower() in MANIFEST_SUFFIXES:
        yield from _manifest(source)
    elif source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
        yield Candidate(str(source.resolve()), str(source))
    elif not source.exists():
        raise IngestError(f"{source}: no such file or folder")
    else:
        raise IngestError(f"{source}: not a folder, an image or a .txt/.csv/.jsonl manifest")


def _folder(folder: Path) -> Iterator[Candidate]:
    """Depth first, entries sorted by name: the order of ``sorted(folder.rglob("*"))``."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        yield Candidate("", str(folder), f"cannot list this folder: {error.strerror}")
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_symlink():
            yield from _link(path)
        elif entry.is_dir(follow_symlinks=False):
            yield from _folder(path)
        elif entry.is_file(follow_symlinks=False) and path.suffix.lower() in IMAGE_SUFFIXES:
            yield Candidate(str(path.resolve()), str(path))


def _link(path: Path) -> Iterator[Candidate]:
    try:
        target = path.resolve(strict=True)
    except FileNotFoundError:
        yield Candidate("", str(path), f"dangling symbolic link (to {os.readlink(path)}, which does not exist)")
        return
    except RuntimeError:  # Python 3.11 reports a loop so
        yield Candidate("", str(path), "symbolic link loop")
        return
    except OSError as error:
        reason = "symbolic link loop" if error.errno == errno.ELOOP else f"cannot follow this link: {error.strerror}"
        yield Candidate("", str(path), reason)
        return
    if target.is_dir():
        yield Candidate("", str(path), f"a link to the folder {target}: not followed (name that folder to ingest it)")
    elif target.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        yield Candidate(str(target), str(path))


def _manifest(path: Path) -> Iterator[Candidate]:
    suffix = path.suffix.lower()
    with path.open("rb") as handle:
        if suffix == ".txt":
            yield from _text_manifest(path, handle)
        elif suffix == ".csv":
            yield from _csv_manifest(path, handle)
        else:
            yield from _jsonl_manifest(path, handle)


def _lines(handle: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """Numbered lines as bytes; a line over :data:`MAX_LINE_BYTES` comes as ``None``, read past
    in pieces so it is never held whole."""
    number = 0
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield number, None
        else:
            yield number, line


def _decoded(number: int, line: bytes | None) -> tuple[str | None, str | None]:
    """The line's text, or the reason it has none."""
    if line is None:
        return None, f"line longer than {MAX_LINE_BYTES:,} bytes"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 text (byte 0x{line[error.start]:02x} at column {error.start + 1})"
    return (text.removeprefix(BOM) if number == 1 else text), None


def _text_manifest(path: Path, handle: BinaryIO) -> Iterator[Candidate]:
    for number, line in _lines(handle):
        origin = f"{path}:{number}"
        text, problem = _decoded(number, line)
        if text is None:
            yield Candidate("", origin, problem)
            continue
        text = text.strip()
        if text and not text.startswith("#"):
            yield manifest_entry(text, path.parent, origin)


def _jsonl_manifest(path: Path, handle: BinaryIO) -> Iterator[Candidate]:
    for number, line in _lines(handle):
        origin = f"{path}:{number}"
        text, problem = _decoded(number, line)
        if text is None:
            yield Candidate("", origin, problem)
            continue
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            yield Candidate("", origin, f"not JSON: {error.msg} (column {error.colno})")
            continue
        except RecursionError:
            yield Candidate("", origin, "JSON nested too deeply")
            continue
        except ValueError as error:  # a number too long to convert, for one
            yield Candidate("", origin, f"not JSON: {error}")
            continue
        found = [record.get(key) for key in PATH_COLUMNS if isinstance(record, dict)]
        value = next((item for item in found if isinstance(item, str)), None)
        if value:
            yield manifest_entry(value, path.parent, origin)
        else:
            yield Candidate("", origin, "no image path or URL in this row (a 'uri', 'path' or 'url' string)")


def _csv_manifest(path: Path, handle: BinaryIO) -> Iterator[Candidate]:
    lines = _lines(handle)
    problems: dict[int, str] = {}

    def texts() -> Iterator[str]:
        """Lines for ``csv``: one without text is given as an empty line (skipped as a row) and
        its reason kept, to be reported at its number."""
        for number, line in lines:
            text, problem = _decoded(number, line)
            if text is None:
                problems[number] = problem or "unreadable line"
                yield "\n"
            else:
                yield text

    reader = csv.reader(texts())
    header = _next_row(reader)
    if isinstance(header, str) or header is None:
        raise IngestError(f"{path}:1: cannot read the CSV header: {header or 'the file is empty'}")
    header = [name.strip().lower() for name in header]
    columns = [name for name in PATH_COLUMNS if name in header]
    if not columns:
        raise IngestError(f"{path}: a CSV manifest needs a 'uri', 'path' or 'url' column")
    position = header.index(columns[0])
    yield from (Candidate("", f"{path}:{number}", problem) for number, problem in _take(problems))
    while True:
        first = reader.line_num + 1
        row = _next_row(reader)
        yield from (Candidate("", f"{path}:{number}", problem) for number, problem in _take(problems))
        if row is None:
            return
        origin = f"{path}:{first}"
        if isinstance(row, str):
            yield Candidate("", origin, row)
        elif row and not all(not cell.strip() for cell in row):
            value = row[position].strip() if position < len(row) else ""
            if value:
                yield manifest_entry(value, path.parent, origin)
            else:
                yield Candidate("", origin, f"no image path or URL in this row (column {columns[0]!r} is empty)")


def _next_row(reader: Iterator[list[str]]) -> list[str] | str | None:
    """The next row, ``None`` at the end, or the reason ``csv`` refused the row (it then goes on
    with the next line)."""
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as error:
        return f"not a CSV row: {error}"


def _take(problems: dict[int, str]) -> Iterable[tuple[int, str]]:
    taken = sorted(problems.items())
    problems.clear()
    return taken


def manifest_entry(text: str, base: Path, origin: str) -> Candidate:
    """A manifest entry as a URL, or as an absolute path (relative ones are read against the
    manifest's folder, ``~`` and ``~user`` expanded); one that cannot be either is rejected."""
    if len(text) > MAX_REFERENCE_CHARACTERS:
        return Candidate("", origin, f"path or URL longer than {MAX_REFERENCE_CHARACTERS:,} characters")
    if "\x00" in text:
        return Candidate("", origin, "path or URL holds a NUL character")
    try:
        if is_url(text):
            urllib.parse.urlsplit(text).port  # noqa: B018 (a bad port or IPv6 address raises here)
            return Candidate(text, origin)
    except ValueError as error:
        return Candidate("", origin, f"not a valid URL: {error}")
    path = Path(text)
    if text.startswith("~"):
        try:
            path = path.expanduser()
        except RuntimeError:
            user = text[1:].split("/", 1)[0]
            return Candidate("", origin, f"cannot expand {'~' + user}: no such user" if user else "no home folder")
    try:
        return Candidate(str(path if path.is_absolute() else (base / path).resolve()), origin)
    except (OSError, RuntimeError) as error:
        return Candidate("", origin, f"cannot resolve this path: {error}")
