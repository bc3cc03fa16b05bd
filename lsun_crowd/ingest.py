"""Adding images to the pool: folders, manifests, URLs; deduplicated by SHA-256, validated by Pillow.

A bad file never stops an ingest. It goes into the report with its source and the reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from sqlalchemy import select

from lsun_crowd.schema import Gold, Item
from lsun_crowd.store import Store, category_id, insert_ignoring_duplicates

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
MANIFEST_SUFFIXES = frozenset({".txt", ".csv", ".jsonl"})
DOWNLOAD_TIMEOUT_SECONDS = 30
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024


class IngestError(ValueError):
    """A source cannot be read at all (a missing folder, a manifest that is not a manifest)."""


@dataclass(frozen=True)
class Rejected:
    source: str
    reason: str


@dataclass
class IngestReport:
    added: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)

    def write(self, path: Path) -> None:
        with path.open("a", encoding="utf-8") as report:
            for entry in self.rejected:
                report.write(json.dumps({"source": entry.source, "reason": entry.reason}) + "\n")


@dataclass(frozen=True)
class Candidate:
    """A reference to an image, and where the reference came from (for error messages)."""

    reference: str
    origin: str


def _is_url(reference: str) -> bool:
    return urllib.parse.urlparse(reference).scheme in {"http", "https", "file"}


def _manifest_entries(path: Path) -> Iterator[Candidate]:
    suffix = path.suffix.lower()
    base = path.parent
    with path.open(encoding="utf-8", newline="") as handle:
        if suffix == ".txt":
            for number, line in enumerate(handle, start=1):
                text = line.strip()
                if text and not text.startswith("#"):
                    yield Candidate(_resolve(text, base), f"{path}:{number}")
        elif suffix == ".csv":
            reader = csv.DictReader(handle)
            columns = [name for name in ("uri", "path", "url") if name in (reader.fieldnames or [])]
            if not columns:
                raise IngestError(f"{path}: a CSV manifest needs a 'uri', 'path' or 'url' column")
            for number, row in enumerate(reader, start=2):
                value = (row.get(columns[0]) or "").strip()
                if value:
                    yield Candidate(_resolve(value, base), f"{path}:{number}")
                else:
                    yield Candidate("", f"{path}:{number}")
        else:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                origin = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    yield Candidate("", f"{origin} (not JSON: {error.msg})")
                    continue
                value = next(
                    (
                        record.get(k)
                        for k in ("uri", "path", "url")
                        if isinstance(record, dict) and isinstance(record.get(k), str)
                    ),
                    None,
                )
                yield Candidate(_resolve(value, base) if value else "", origin)


def _resolve(reference: str, base: Path) -> str:
    if _is_url(reference):
        return reference
    path = Path(reference).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def candidates(source: Path) -> Iterator[Candidate]:
    """Every image reference a folder or manifest holds, in a stable order."""
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                yield Candidate(str(path.resolve()), str(path))
    elif source.is_file() and source.suffix.lower() in MANIFEST_SUFFIXES:
        yield from _manifest_entries(source)
    elif source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
        yield Candidate(str(source.resolve()), str(source))
    elif not source.exists():
        raise IngestError(f"{source}: no such file or folder")
    else:
        raise IngestError(f"{source}: not a folder, an image or a .txt/.csv/.jsonl manifest")


def read_with_status(reference: str) -> tuple[bytes, os.stat_result | None]:
    """The bytes of a file or URL, and for a local file its status taken before the read (so a
    write during the read shows as a later mtime, and embedding hashes the file again)."""
    if _is_url(reference) and not reference.startswith("file:"):
        with urllib.request.urlopen(reference, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
            data: bytes = response.read(MAX_DOWNLOAD_BYTES + 1)
        if len(data) > MAX_DOWNLOAD_BYTES:
            raise ValueError(f"larger than {MAX_DOWNLOAD_BYTES} bytes")
        return data, None
    path = Path(urllib.request.url2pathname(urllib.parse.urlparse(reference).path) if _is_url(reference) else reference)
    with path.open("rb") as handle:
        status = os.fstat(handle.fileno())
        return handle.read(), status


def validate_image(data: bytes) -> tuple[int, int]:
    """Decode the image fully; raises on corrupt data and on Pillow's decompression-bomb limit."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.format not in {"JPEG", "PNG", "WEBP", "BMP", "MPO"}:
                raise ValueError(f"unsupported image format {image.format}")
            return image.size


def ingest(store: Store, sources: list[Path], download_dir: Path) -> IngestReport:
    """Add every valid, new image of the sources to the pool."""
    report = IngestReport()
    # Hashes are looked up in the store's unique index as they come (one indexed read per image,
    # which costs far less than decoding it), so memory never grows with the pool.
    pending: set[str] = set()  # this batch's, not yet stored
    for source in sources:
        batch: list[dict[str, object]] = []
        for candidate in candidates(source):
            if not candidate.reference:
                report.rejected.append(Rejected(candidate.origin, "no image path or URL in this row"))
                continue
            try:
                data, status = read_with_status(candidate.reference)
                width, height = validate_image(data)
            except Exception as error:  # any failure to read or decode is reported, never fatal
                report.rejected.append(Rejected(candidate.origin, f"{type(error).__name__}: {error}"))
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in pending or _stored(store, digest):
                report.duplicates += 1
                continue
            pending.add(digest)
            uri = candidate.reference
            if urllib.parse.urlparse(uri).scheme in {"http", "https"}:
                download_dir.mkdir(parents=True, exist_ok=True)
                local = download_dir / digest
                local.write_bytes(data)
                uri, status = str(local), local.stat()
            elif uri.startswith("file:"):
                uri = urllib.request.url2pathname(urllib.parse.urlparse(uri).path)
            batch.append(
                {
                    "sha256": digest,
                    "uri": uri,
                    "width": width,
                    "height": height,
                    "file_size": status.st_size if status is not None else None,
                    "file_mtime_ns": status.st_mtime_ns if status is not None else None,
                }
            )
            if len(batch) >= 500:
                report.added += _commit(store, batch)
                pending.clear()
        report.added += _commit(store, batch)
        pending.clear()
    return report


def _stored(store: Store, digest: str) -> bool:
    with store.session() as session:
        return session.scalar(select(Item.id).where(Item.sha256 == digest)) is not None


def _commit(store: Store, batch: list[dict[str, object]]) -> int:
    with store.session() as session:
        insert_ignoring_duplicates(session, Item, batch)
    count = len(batch)
    batch.clear()
    return count


ANSWER_WORDS = {"1": 1, "yes": 1, "true": 1, "positive": 1, "0": 0, "no": 0, "false": 0, "negative": 0}


GOLD_LOOKUP_CHUNK = 5_000  # answers looked up per query, far below every database's parameter limit


def read_answers(path: Path) -> list[tuple[str, str, int]]:
    """Rows ``(uri, category, label)`` of a CSV with columns ``uri,category,label``.

    Labels may be 1/0, yes/no, true/false or positive/negative; relative paths are resolved
    against the CSV's folder. A bad row raises :class:`IngestError` naming the file and line.
    """
    rows: list[tuple[str, str, int]] = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"uri", "category", "label"} - set(reader.fieldnames or [])
        if missing:
            raise IngestError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for number, row in enumerate(reader, start=2):
            label = ANSWER_WORDS.get((row["label"] or "").strip().lower())
            if label is None:
                raise IngestError(f"{path}:{number}: label {row['label']!r} is not one of 1/0/yes/no")
            rows.append((_resolve((row["uri"] or "").strip(), path.parent), (row["category"] or "").strip(), label))
    return rows


def ingest_gold(store: Store, path: Path) -> int:
    """Read known answers (see :func:`read_answers`) for images already in the pool, matched by
    path or by SHA-256 of the file. Images are looked up a chunk of answers at a time (by the
    indexed path, then by hash), so the pool is never read whole."""
    rows = read_answers(path)
    with store.session() as session:
        gold_rows = []
        for start in range(0, len(rows), GOLD_LOOKUP_CHUNK):
            chunk = rows[start : start + GOLD_LOOKUP_CHUNK]
            by_uri = dict(
                session.execute(select(Item.uri, Item.id).where(Item.uri.in_({uri for uri, _, _ in chunk}))).all()
            )
            for number, (uri, category, label) in enumerate(chunk, start=start + 2):
                item_id = by_uri.get(uri)
                if item_id is None and Path(uri).is_file():
                    digest = hashlib.sha256(Path(uri).read_bytes()).hexdigest()
                    item_id = session.scalar(select(Item.id).where(Item.sha256 == digest))
                if item_id is None:
                    raise IngestError(f"{path}:{number}: image {uri} is not in the pool; ingest it first")
                gold_rows.append({"item_id": item_id, "category_id": category_id(session, category), "answer": label})
        insert_ignoring_duplicates(session, Gold, gold_rows)
    return len(rows)
