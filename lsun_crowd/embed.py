"""Image embeddings: computed once per image by a backbone, cached on disk, memory-mapped.

The cache is append-only and keyed by the image's SHA-256, so it survives crashes (a half-written
batch is ignored on the next open), is shared by every category and round, and is never recomputed.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from lsun_crowd.config import ModelConfig

Progress = Callable[[int], None]


class EmbeddingError(RuntimeError):
    pass


class EmbeddingModel(Protocol):
    """Turns images into fixed-length vectors. ``key`` names the exact model for the cache."""

    key: str
    dim: int

    def embed(self, images: Sequence[Image.Image]) -> NDArray[np.float32]: ...


def pick_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise EmbeddingError("the device is 'cuda' but no CUDA device is available")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


class EmbeddingCache:
    """Vectors in ``vectors.f32`` (rows in order), their image hashes in ``keys.txt``."""

    def __init__(self, directory: Path, dim: int) -> None:
        self.directory = directory
        self.dim = dim
        directory.mkdir(parents=True, exist_ok=True)
        self._vectors_path = directory / "vectors.f32"
        self._keys_path = directory / "keys.txt"
        self._rows: dict[str, int] = {}
        self._load_index()

    def _load_index(self) -> None:
        keys = self._keys_path.read_text().split() if self._keys_path.exists() else []
        row_bytes = 4 * self.dim
        stored_rows = self._vectors_path.stat().st_size // row_bytes if self._vectors_path.exists() else 0
        if len(keys) > stored_rows:
            raise EmbeddingError(f"{self._keys_path}: lists more images than {self._vectors_path} holds")
        if stored_rows > len(keys):
            # A batch whose vectors were written but whose keys were not: drop the orphan rows.
            with self._vectors_path.open("r+b") as vectors:
                vectors.truncate(len(keys) * row_bytes)
        self._rows = {key: row for row, key in enumerate(keys)}

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, sha256s: Sequence[str], vectors: NDArray[np.float32]) -> None:
        if vectors.shape != (len(sha256s), self.dim):
            raise EmbeddingError(f"expected vectors of shape {(len(sha256s), self.dim)}, got {vectors.shape}")
        fresh = [i for i, key in enumerate(sha256s) if key not in self._rows]
        if not fresh:
            return
        with self._vectors_path.open("ab") as handle:
            handle.write(np.ascontiguousarray(vectors[fresh], dtype=np.float32).tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        with self._keys_path.open("a") as handle:
            handle.write("".join(sha256s[i] + "\n" for i in fresh))
            handle.flush()
            os.fsync(handle.fileno())
        start = len(self._rows)
        for offset, i in enumerate(fresh):
            self._rows[sha256s[i]] = start + offset

    def get(self, sha256s: Sequence[str]) -> NDArray[np.float32]:
        missing = [key for key in sha256s if key not in self._rows]
        if missing:
            raise EmbeddingError(f"{len(missing)} image(s) have no cached embedding, e.g. {missing[0]}")
        matrix = np.memmap(self._vectors_path, dtype=np.float32, mode="r", shape=(len(self._rows), self.dim))
        return np.asarray(matrix[[self._rows[key] for key in sha256s]])


def cache_directory(cache_root: Path, model_key: str) -> Path:
    readable = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model_key)[:60]
    return cache_root / f"{readable}-{hashlib.sha256(model_key.encode()).hexdigest()[:12]}"


def load_image(uri: str, sha256: str | None = None) -> Image.Image:
    """Decode an image; with ``sha256``, also check the file is still the one that was ingested."""
    try:
        data = Path(uri).read_bytes()
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise EmbeddingError(f"{uri}: the file changed since it was ingested (SHA-256 differs)")
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except EmbeddingError:
        raise
    except Exception as error:
        raise EmbeddingError(f"{uri}: cannot read image: {type(error).__name__}: {error}") from error


@dataclass
class EmbedReport:
    computed: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # sha256 -> reason


def embed_items(
    model: EmbeddingModel,
    cache: EmbeddingCache,
    items: Sequence[tuple[str, str]],
    batch_size: int,
    progress: Progress | None = None,
) -> EmbedReport:
    """Embed every ``(sha256, uri)`` not yet cached. An image that is gone, corrupt or changed since
    ingest is reported with the reason and skipped; the rest are embedded."""
    report = EmbedReport()
    todo = [(sha, uri) for sha, uri in dict(items).items() if sha not in cache]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        loaded: list[tuple[str, Image.Image]] = []
        for sha, uri in chunk:
            try:
                loaded.append((sha, load_image(uri, sha)))
            except EmbeddingError as error:
                report.failed[sha] = str(error)
        if loaded:
            cache.append([sha for sha, _ in loaded], model.embed([image for _, image in loaded]))
            report.computed += len(loaded)
        if progress is not None:
            progress(len(chunk))
    return report


class PixelBackbone:
    """Grayscale thumbnails as vectors: the right backbone for tiny images such as 8×8 digits."""

    def __init__(self, config: ModelConfig) -> None:
        self.size = config.image_size
        self.dim = self.size * self.size
        self.key = f"pixels-{self.size}"

    def embed(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        rows = [
            np.asarray(
                image.convert("L").resize((self.size, self.size), Image.Resampling.BILINEAR), dtype=np.float32
            ).reshape(-1)
            / 255.0
            for image in images
        ]
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)
