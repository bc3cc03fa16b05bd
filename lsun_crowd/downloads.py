"""Fetching one image URL within an overall deadline and a size limit.

A socket timeout alone bounds each wait, not the whole: a server that sends a byte a second never
trips it. Here the whole fetch (connecting, redirects, every read) runs in a worker thread that
the caller waits for at most ``deadline_seconds``; the worker checks the same deadline between
reads and closes the connection once it has passed (a read already waiting ends at its socket
timeout, which is never longer than the deadline), so nothing is left reading for long.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from dataclasses import dataclass, field

CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class DownloadLimits:
    """``[ingest]`` in lsun-crowd.toml: the most time and bytes one URL may take."""

    deadline_seconds: float = 120.0
    max_bytes: int = 64 * 1024 * 1024


class DownloadRejected(ValueError):
    """A URL that took longer than the deadline or sent more than the size limit."""


@dataclass
class _Outcome:
    data: bytes | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def download(url: str, limits: DownloadLimits) -> bytes:
    """The body of ``url``; raises :class:`DownloadRejected` past the deadline or the size limit,
    and urllib's errors (HTTP status, refused connection) as they come."""
    deadline = time.monotonic() + limits.deadline_seconds
    outcome = _Outcome()
    worker = threading.Thread(target=_fetch, args=(url, limits, deadline, outcome), daemon=True)
    worker.start()
    if not outcome.done.wait(limits.deadline_seconds):
        raise _late(url, limits)
    if outcome.error is not None:
        raise outcome.error
    assert outcome.data is not None
    return outcome.data


def _late(url: str, limits: DownloadLimits) -> DownloadRejected:
    return DownloadRejected(
        f"{url}: not downloaded within {limits.deadline_seconds:g} s (ingest.download_deadline_seconds)"
    )


def _fetch(url: str, limits: DownloadLimits, deadline: float, outcome: _Outcome) -> None:
    try:
        outcome.data = _read(url, limits, deadline)
    except BaseException as error:  # handed to the caller, who raises it
        outcome.error = error
    finally:
        outcome.done.set()


def _read(url: str, limits: DownloadLimits, deadline: float) -> bytes:
    too_large = DownloadRejected(f"{url}: larger than {limits.max_bytes:,} bytes (ingest.max_download_bytes)")
    with urllib.request.urlopen(url, timeout=max(deadline - time.monotonic(), 0.001)) as response:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limits.max_bytes:
            raise too_large
        chunks: list[bytes] = []
        received = 0
        while chunk := response.read1(CHUNK_BYTES):
            received += len(chunk)
            if received > limits.max_bytes:
                raise too_large
            if time.monotonic() > deadline:
                raise _late(url, limits)
            chunks.append(chunk)
    return b"".join(chunks)
