"""Image embeddings: computed once per image by a backbone, cached on disk (see
:mod:`lsun_crowd.embedding_cache`), read by every category and round.

:func:`embed_items` streams the pool in waves: the images of a wave not yet cached are read and
prepared by DataLoader workers (:mod:`lsun_crowd.image_loader`) while the main process runs the
network, and their vectors go to the cache, which writes one durable shard per tens of thousands
of rows. torch is imported only here, inside the functions that embed, so that commands which
never embed (``status``, ``export``, ``init``…) start without it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from lsun_crowd import crashpoints
from lsun_crowd.config import ModelConfig
from lsun_crowd.embedding_cache import EmbeddingCache, EmbeddingError

if TYPE_CHECKING:
    import torch

    from lsun_crowd.image_loader import Batch, ImageFile

__all__ = [
    "EmbedReport",
    "EmbeddingCache",
    "EmbeddingError",
    "EmbeddingModel",
    "PixelBackbone",
    "PoolItem",
    "cache_directory",
    "embed_items",
    "load_image",
    "pick_device",
]

Progress = Callable[[int], None]
# A pool image: (sha256, uri), or (sha256, uri, file size, mtime in ns) as ingest recorded them.
PoolItem = tuple[str, str] | tuple[str, str, int | None, int | None]
WAVE = 16_384  # images handed to one DataLoader: what waits in memory, and how often workers start
WORKERS_FROM = 1_024  # fewer images to embed than this: decode in this process (workers take time to start)
MAX_LOADER_WORKERS = 4


class EmbeddingModel(Protocol):
    """Turns images into fixed-length vectors. ``key`` names the exact model for the cache.

    A model may also offer ``prepare`` (a picklable callable from a PIL image to an array or a
    tensor, run in the loader's worker processes) and ``embed_prepared(batch)`` (the stacked
    prepared images to vectors); with both, only the network runs in the main process. With
    ``prepare_tensor`` too (uint8 CHW tensor to prepared tensor, on the model's device), JPEGs
    are decoded on the GPU when the model runs on CUDA.
    """

    key: str
    dim: int

    def embed(self, images: Sequence[Image.Image]) -> NDArray[np.float32]: ...


def pick_device(setting: str) -> torch.device:
    import torch

    if setting == "cuda" and not torch.cuda.is_available():
        raise EmbeddingError("the device is 'cuda' but no CUDA device is available")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def cache_directory(cache_root: Path, model_key: str) -> Path:
    readable = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model_key)[:60]
    return cache_root / f"{readable}-{hashlib.sha256(model_key.encode()).hexdigest()[:12]}"


def load_image(uri: str, sha256: str | None = None) -> Image.Image:
    """Decode an image; with ``sha256``, also check the file is still the one that was ingested."""
    from lsun_crowd.image_loader import ImageFile, decode, read_checked

    return decode(uri, read_checked(ImageFile(sha256 or "", uri), check=sha256 is not None))


@dataclass
class EmbedReport:
    computed: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # sha256 -> reason


def default_loader_workers(images: int) -> int:
    """Worker processes for a wave of ``images``: none for a few (starting them costs more than
    they save), else one per spare core, at most :data:`MAX_LOADER_WORKERS`."""
    if images < WORKERS_FROM:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_LOADER_WORKERS, cores - 1))


def waves(items: Iterable[PoolItem], cache: EmbeddingCache) -> Iterator[list[ImageFile]]:
    """The images not yet cached, a wave at a time; each chunk is checked against the cache in
    one lookup, after the previous wave's vectors went in (so a repeated image is embedded once)."""
    from lsun_crowd.image_loader import ImageFile

    wave: dict[str, ImageFile] = {}
    chunk: list[PoolItem] = []

    def take(chunk: list[PoolItem]) -> None:
        cached = cache.contains([item[0] for item in chunk])
        for item, known in zip(chunk, cached, strict=True):
            if not known and item[0] not in wave:
                size, mtime_ns = (item[2], item[3]) if len(item) == 4 else (None, None)
                wave[item[0]] = ImageFile(item[0], item[1], size, mtime_ns)

    for item in items:
        chunk.append(item)
        if len(chunk) == WAVE:
            take(chunk)
            chunk = []
            if len(wave) >= WAVE:
                yield list(wave.values())
                wave = {}
    take(chunk)
    if wave:
        yield list(wave.values())


def embed_items(
    model: EmbeddingModel,
    cache: EmbeddingCache,
    items: Iterable[PoolItem],
    batch_size: int,
    progress: Progress | None = None,
    workers: int | None = None,
) -> EmbedReport:
    """Embed every pool image not yet cached, and make the cache durable before returning.

    ``items`` may be a stream of any length; it is read a wave at a time. ``workers`` is the
    number of decoding processes (``None``: :func:`default_loader_workers`). An image that is
    gone, corrupt or changed since ingest is reported with the reason and skipped; the rest are
    embedded. ``progress`` is called with the number of images each batch settled.
    """
    report = EmbedReport()
    try:
        for wave in waves(items, cache):
            _embed_wave(model, cache, wave, batch_size, workers, progress, report)
    finally:
        cache.flush()
    return report


def _embed_wave(
    model: EmbeddingModel,
    cache: EmbeddingCache,
    wave: list[ImageFile],
    batch_size: int,
    workers: int | None,
    progress: Progress | None,
    report: EmbedReport,
) -> None:
    import torch

    from lsun_crowd.image_loader import image_batches

    prepare = getattr(model, "prepare", None) if callable(getattr(model, "embed_prepared", None)) else None
    device = getattr(model, "device", None)
    on_gpu = (
        prepare is not None
        and callable(getattr(model, "prepare_tensor", None))
        and isinstance(device, torch.device)
        and device.type == "cuda"
        and torch.cuda.is_available()
    )
    batches = image_batches(
        wave,
        batch_size,
        default_loader_workers(len(wave)) if workers is None else workers,
        prepare,
        raw_jpeg=on_gpu,
        pin_memory=on_gpu,
    )
    for batch in batches:
        _embed_batch(model, cache, batch, device if on_gpu else None, report)
        crashpoints.reached("embed")
        if progress is not None:
            progress(batch.size)


def _embed_batch(
    model: EmbeddingModel, cache: EmbeddingCache, batch: Batch, gpu: torch.device | None, report: EmbedReport
) -> None:
    report.failed.update(batch.failures)
    model_any: Any = model  # the optional methods of EmbeddingModel's docstring
    if batch.prepared is not None:
        cache.append(batch.prepared_shas, model_any.embed_prepared(batch.prepared))
        report.computed += len(batch.prepared_shas)
    if batch.jpegs and gpu is not None:
        import torch

        from lsun_crowd.image_loader import decode_jpegs_on

        decoded = decode_jpegs_on(gpu, batch.jpeg_uris, batch.jpegs)
        shas, tensors = [], []
        for sha, image in zip(batch.jpeg_shas, decoded, strict=True):
            if isinstance(image, str):
                report.failed[sha] = image
            else:
                shas.append(sha)
                tensors.append(model_any.prepare_tensor(image))
        if tensors:
            cache.append(shas, model_any.embed_prepared(torch.stack(tensors)))
            report.computed += len(shas)
    if batch.images:
        cache.append(batch.image_shas, model.embed(batch.images))
        report.computed += len(batch.image_shas)


@dataclass(frozen=True)
class GrayThumbnail:
    """A grayscale ``size``×``size`` thumbnail as a flat float32 vector in [0, 1]."""

    size: int

    def __call__(self, image: Image.Image) -> NDArray[np.float32]:
        thumbnail = image.convert("L").resize((self.size, self.size), Image.Resampling.BILINEAR)
        vector: NDArray[np.float32] = np.asarray(thumbnail, dtype=np.float32).reshape(-1) / np.float32(255.0)
        return vector


class PixelBackbone:
    """Grayscale thumbnails as vectors: the right backbone for tiny images such as 8×8 digits."""

    def __init__(self, config: ModelConfig) -> None:
        self.size = config.image_size
        self.dim = self.size * self.size
        self.key = f"pixels-{self.size}"
        self.prepare = GrayThumbnail(self.size)

    def embed(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        rows = [self.prepare(image) for image in images]
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)

    def embed_prepared(self, batch: torch.Tensor) -> NDArray[np.float32]:
        return np.asarray(batch.numpy(), dtype=np.float32)
