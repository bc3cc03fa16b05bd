"""Pretrained weights: downloaded once into torch's cache, checked, or never where offline.

As torchvision does, a checkpoint is fetched from its URL into ``$TORCH_HOME/hub/checkpoints`` the
first time it is needed, into a temporary file beside the target that is moved into place only
whole, and its SHA-256 must start with the hex digits its file name carries
(``resnet18-f37072fd.pth``). ``torch.hub.download_url_to_file`` is not used: it takes a body cut
short by a dropped connection for the whole file (then a checksum error, or, for a name without
digits, a broken checkpoint in the cache). A dropped connection is retried a few times; a checksum
that does not match is not, and nothing is left in the cache. With ``[model] offline = true``, or the
environment variable :data:`OFFLINE_ENV` set, nothing is downloaded, and a missing file is an error
that says which file to copy where.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from lsun_crowd.embed import EmbeddingError

OFFLINE_ENV = "LSUN_CROWD_OFFLINE"
ATTEMPTS = 4  # tries of one download; a connection dropped midway starts the file again
TIMEOUT_SECONDS = 60.0  # the most one wait on the server may take
CHUNK_BYTES = 1 << 20
HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")  # the checksum's first digits in a checkpoint's file name
TRANSIENT = (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError)


def offline(setting: bool) -> bool:
    """Whether downloads are forbidden: by the config, or by :data:`OFFLINE_ENV` (any value but
    empty, ``0`` or ``false``)."""
    return setting or os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def cache_path(url: str) -> Path:
    """Where torch's hub cache keeps the checkpoint at ``url``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlparse(url).path)


def fetch(url: str, *, offline_setting: bool = False, what: str = "model.weights") -> Path:
    """The local copy of the checkpoint at ``url``, downloaded and checked first if it is not in
    torch's cache yet; :class:`EmbeddingError` with one line naming the URL and the cache file
    otherwise."""
    target = cache_path(url)
    if target.is_file():
        return target
    if offline(offline_setting):
        raise EmbeddingError(
            f"{what}: {target.name} is not in the local torch cache and downloads are off "
            f"([model] offline or {OFFLINE_ENV}): copy {url} to {target}"
        )
    match = HASH_PREFIX.search(target.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        for attempt in Retrying(
            retry=retry_if_exception_type(TRANSIENT),
            stop=stop_after_attempt(ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=8),
            reraise=True,
        ):
            with attempt:
                digest = _download(url, target)
    except TRANSIENT as error:
        reason = getattr(error, "reason", None) or error
        raise EmbeddingError(f"{what}: could not download {url} ({reason}); copy it to {target}") from error
    except OSError as error:
        raise EmbeddingError(f"{what}: could not write {target}: {error.strerror or error}") from error
    partial = _partial(target)
    if match and not digest.startswith(match.group(1)):
        partial.unlink(missing_ok=True)
        raise EmbeddingError(
            f"{what}: {url} sent a file whose SHA-256 does not start with {match.group(1)} as its name says: "
            f"not kept; try again, or copy a good copy to {target}"
        )
    partial.replace(target)
    return target


def _partial(target: Path) -> Path:
    return target.with_name(target.name + ".partial")


def _download(url: str, target: Path) -> str:
    """Stream ``url`` into the target's partial file; its SHA-256. A body shorter than the
    server's ``Content-Length`` is a dropped connection (:class:`ConnectionError`)."""
    partial = _partial(target)
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, partial.open("wb") as out:
            expected = response.headers.get("Content-Length")
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        if expected is not None and expected.isdigit() and received != int(expected):
            raise ConnectionError(f"the connection dropped after {received:,} of {int(expected):,} bytes")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def load(path: Path) -> dict[str, Any]:
    """The state dict in a checkpoint file."""
    import torch

    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state
