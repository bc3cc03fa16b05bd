"""Reading, checking and decoding pool images for the backbone, in DataLoader worker processes.

Embedding is bound by JPEG decoding on a CPU, so decoding runs in ``num_workers`` processes while
the main process runs the network. A worker reads each file, makes sure it is still the image
ingest hashed, decodes it and runs the model's ``prepare`` on it (resize, crop, normalise), and
the batch comes back as one stacked tensor through shared memory. With a CUDA device the workers
only read the files: JPEGs are decoded on the GPU by ``torchvision.io.decode_jpeg``, in batches,
and prepared there.

Checking a file costs a ``stat``, not a hash: ingest recorded its size and modification time, and
a file whose size and mtime are unchanged is trusted to be the image ingest hashed. Any other file
(or one ingested before those were recorded) is hashed again, and a changed one is reported.

A file that cannot be read, checked, decoded or prepared comes back as a failure with its reason,
never as an exception, so one bad image never stops the loader.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lsun_crowd.embedding_cache import EmbeddingError
from lsun_crowd.image_errors import image_problem

JPEG_MAGIC = b"\xff\xd8\xff"
PREFETCH_BATCHES = 4  # batches each worker decodes ahead of the network


@dataclass(frozen=True)
class ImageFile:
    """A pool image to embed: its hash and path, and the size and mtime ingest saw (if known)."""

    sha256: str
    uri: str
    size: int | None = None
    mtime_ns: int | None = None


def read_checked(image: ImageFile, check: bool = True) -> bytes:
    """The file's bytes, once it is known to be the image ingest hashed (with ``check``)."""
    try:
        with Path(image.uri).open("rb") as handle:
            status = os.fstat(handle.fileno())  # before reading: a write during the read changes the mtime
            data = handle.read()
    except Exception as error:
        raise EmbeddingError(f"{image.uri}: cannot read image: {image_problem(error)}") from error
    unchanged = image.size is not None and image.mtime_ns is not None
    unchanged = unchanged and status.st_size == image.size and status.st_mtime_ns == image.mtime_ns
    if check and not unchanged and hashlib.sha256(data).hexdigest() != image.sha256:
        raise EmbeddingError(f"{image.uri}: the file changed since it was ingested (SHA-256 differs)")
    return data


def decode(uri: str, data: bytes) -> Image.Image:
    """An RGB image from a file's bytes; a file Pillow cannot decode raises :class:`EmbeddingError`."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except Exception as error:
        raise EmbeddingError(f"{uri}: cannot read image: {image_problem(error)}") from error


@dataclass(frozen=True)
class Loaded:
    """What a worker made of one image: exactly one of the four fields after ``uri`` is set."""

    sha256: str
    uri: str
    prepared: Any = None  # the model's prepare() output: an array or a tensor
    jpeg: torch.Tensor | None = None  # raw JPEG bytes, to decode on the GPU
    image: Image.Image | None = None  # a decoded image, for a model without prepare()
    failure: str | None = None


class Batch(NamedTuple):
    """A batch as the main process receives it (a named tuple, so ``pin_memory`` pins its tensors)."""

    prepared_shas: list[str]
    prepared: torch.Tensor | None
    jpeg_shas: list[str]
    jpeg_uris: list[str]
    jpegs: list[torch.Tensor]
    image_shas: list[str]
    images: list[Image.Image]
    failures: list[tuple[str, str]]

    @property
    def size(self) -> int:
        return len(self.prepared_shas) + len(self.jpeg_shas) + len(self.image_shas) + len(self.failures)


class ImageFiles(Dataset[Loaded]):
    def __init__(
        self, images: Sequence[ImageFile], prepare: Callable[[Image.Image], Any] | None, raw_jpeg: bool
    ) -> None:
        self.images = images
        self.prepare = prepare
        self.raw_jpeg = raw_jpeg

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Loaded:
        image = self.images[index]
        try:
            data = read_checked(image)
            if self.raw_jpeg and data.startswith(JPEG_MAGIC):
                return Loaded(image.sha256, image.uri, jpeg=torch.frombuffer(bytearray(data), dtype=torch.uint8))
            decoded = decode(image.uri, data)
            if self.prepare is None:
                return Loaded(image.sha256, image.uri, image=decoded)
            with _one_thread():
                return Loaded(image.sha256, image.uri, prepared=self.prepare(decoded))
        except EmbeddingError as error:
            return Loaded(image.sha256, image.uri, failure=str(error))
        except Exception as error:  # the model's prepare() failed on this image
            return Loaded(
                image.sha256, image.uri, failure=f"{image.uri}: cannot prepare image: {type(error).__name__}: {error}"
            )


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one thread while preparing an image. Workers run so anyway; without workers, the
    network's threads would split each tiny resize between them, and on a busy machine wait for
    each other: 2 ms an image becomes 30 to 50."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def collate(loaded: list[Loaded]) -> Batch:
    """Stack the prepared images into one tensor (in the worker, so it crosses in shared memory)."""
    prepared = [item for item in loaded if item.prepared is not None]
    stacked: torch.Tensor | None = None
    if prepared:
        first = prepared[0].prepared
        if isinstance(first, torch.Tensor):
            stacked = torch.stack([item.prepared for item in prepared])
        else:
            stacked = torch.from_numpy(np.stack([np.asarray(item.prepared) for item in prepared]))
    jpegs = [item for item in loaded if item.jpeg is not None]
    images = [item for item in loaded if item.image is not None]
    return Batch(
        [item.sha256 for item in prepared],
        stacked,
        [item.sha256 for item in jpegs],
        [item.uri for item in jpegs],
        [item.jpeg for item in jpegs if item.jpeg is not None],
        [item.sha256 for item in images],
        [item.image for item in images if item.image is not None],
        [(item.sha256, item.failure) for item in loaded if item.failure is not None],
    )


def image_batches(
    images: Sequence[ImageFile],
    batch_size: int,
    workers: int,
    prepare: Callable[[Image.Image], Any] | None,
    raw_jpeg: bool = False,
    pin_memory: bool = False,
) -> DataLoader[Loaded]:
    """Batches of the images, read and prepared by ``workers`` processes (none: in this one)."""
    return DataLoader(
        ImageFiles(images, prepare, raw_jpeg),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=PREFETCH_BATCHES if workers else None,
    )


def decode_jpegs_on(
    device: torch.device, uris: Sequence[str], jpegs: Sequence[torch.Tensor]
) -> list[torch.Tensor | str]:
    """RGB uint8 CHW images on ``device`` decoded from JPEG bytes; an image the GPU decoder
    refuses (CMYK, some progressive files) is decoded on the CPU instead, and one that neither
    decodes becomes its failure reason."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    try:
        return list(decode_jpeg(list(jpegs), mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        pass  # one bad file fails the whole batch: decode them one by one
    decoded: list[torch.Tensor | str] = []
    for uri, data in zip(uris, jpegs, strict=True):
        try:
            decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            try:
                decoded.append(decode_image(data, mode=ImageReadMode.RGB).to(device, non_blocking=True))
            except RuntimeError as error:
                decoded.append(f"{uri}: cannot read image: {type(error).__name__}: {error}")
    return decoded
