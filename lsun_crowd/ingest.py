"""Adding images to the pool: folders, manifests, URLs; deduplicated by SHA-256, validated by Pillow.

A bad file or manifest line never stops an ingest. It goes into the report with its source
(``FILE:LINE`` for a manifest line) and the reason, and every valid entry beside it is stored.
Where images are found, and what happens to links, is :mod:`lsun_crowd.manifests`; how a URL is
fetched within a deadline and a size limit, :mod:`lsun_crowd.downloads`.
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
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from sqlalchemy import select

from lsun_crowd import crashpoints
from lsun_crowd.downloads import DownloadLimits, DownloadRejected, download
from lsun_crowd.image_errors import image_problem
from lsun_crowd.manifests import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from lsun_crowd.manifests import MANIFEST_SUFFIXES as MANIFEST_SUFFIXES
from lsun_crowd.manifests import Candidate as Candidate
from lsun_crowd.manifests import IngestError as IngestError
from lsun_crowd.manifests import candidates as candidates
from lsun_crowd.manifests import is_url, manifest_entry
from lsun_crowd.schema import Gold, Item
from lsun_crowd.store import Store, category_id, insert_ignoring_duplicates


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


def read_with_status(reference: str, limits: DownloadLimits = DownloadLimits()) -> tuple[bytes, os.stat_result | None]:
    """The bytes of a file or URL, and for a local file its status taken before the read (so a
    write during the read shows as a later mtime, and embedding hashes the file again)."""
    if is_url(reference) and not reference.startswith("file:"):
        return download(reference, limits), None
    path = Path(urllib.request.url2pathname(urllib.parse.urlparse(reference).path) if is_url(reference) else reference)
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


def ingest(
    store: Store, sources: list[Path], download_dir: Path, limits: DownloadLimits = DownloadLimits()
) -> IngestReport:
    """Add every valid, new image of the sources to the pool; URLs within ``limits``."""
    report = IngestReport()
    # Hashes are looked up in the store's unique index as they come (one indexed read per image,
    # which costs far less than decoding it), so memory never grows with the pool.
    pending: set[str] = set()  # this batch's, not yet stored
    for source in sources:
        batch: list[dict[str, object]] = []
        for candidate in candidates(source):
            if candidate.problem is not None or not candidate.reference:
                reason = candidate.problem or "no image path or URL in this row"
                report.rejected.append(Rejected(candidate.origin, reason))
                continue
            try:
                data, status = read_with_status(candidate.reference, limits)
                width, height = validate_image(data)
            except DownloadRejected as error:
                report.rejected.append(Rejected(candidate.origin, str(error)))
                continue
            except Exception as error:  # any failure to read or decode is reported, never fatal
                report.rejected.append(Rejected(candidate.origin, image_problem(error)))
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
            crashpoints.reached("ingest")  # checked, not yet written
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
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            missing = {"uri", "category", "label"} - set(reader.fieldnames or [])
            if missing:
                raise IngestError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            for number, row in enumerate(reader, start=2):
                rows.append(_answer(path, number, row))
        except UnicodeDecodeError:
            raise IngestError(f"{path}:{reader.line_num + 1}: not UTF-8 text") from None
        except csv.Error as error:
            raise IngestError(f"{path}:{reader.line_num}: not a CSV row: {error}") from None
    return rows


def _answer(path: Path, number: int, row: dict[str, str | None]) -> tuple[str, str, int]:
    label = ANSWER_WORDS.get((row["label"] or "").strip().lower())
    if label is None:
        raise IngestError(f"{path}:{number}: label {row['label']!r} is not one of 1/0/yes/no")
    found = manifest_entry((row["uri"] or "").strip(), path.parent, f"{path}:{number}")
    if found.problem is not None:
        raise IngestError(f"{found.origin}: {found.problem}")
    return found.reference, (row["category"] or "").strip(), label


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
