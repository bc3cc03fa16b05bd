"""Embedding and scoring as Ray Data jobs, for pools one process is too slow for (``model.engine = "ray"``).

Both steps are ``map_batches`` over a pool of Ray actors, each loading its model once. Only the
driver talks to the store and writes the embedding cache: scoring workers read the cache themselves
(by its directory, which every worker must see at the same path) and return logits; embedding
workers decode and embed images and return the vectors, which the driver appends. Results come back
in input order (``preserve_order``) and are checked against it.

A scoring worker scores whole pool chunks, the very batches the local engine scores: float32 matrix
products round differently with the batch's shape, so other batches would move logits in their last
bit, and with them the confidences stored with the labels. Imported only when the Ray engine is
chosen (:func:`lsun_crowd.engine.engine_for`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow
import ray
import ray.data
import torch
from numpy.typing import NDArray

from lsun_crowd.classifier import Head
from lsun_crowd.config import ModelConfig
from lsun_crowd.embed import (
    EmbeddingCache,
    EmbeddingError,
    EmbeddingModel,
    EmbedReport,
    PoolItem,
    Progress,
    pick_device,
)
from lsun_crowd.embed import waves as embed_waves
from lsun_crowd.image_loader import ImageFile, decode, read_checked

PoolChunk = list[tuple[int, str]]
Batch = dict[str, NDArray[Any]]
# Pool images one Ray dataset scores. The pool is read from the store chunk by chunk, so the driver
# holds one window of hashes at a time, however large the pool; each window starts its actors anew.
SCORE_WINDOW = 1_000_000


class RayEngineError(RuntimeError):
    pass


def connect(config: ModelConfig) -> None:
    """Join the cluster at ``ray_address``, or start Ray on this machine when it is empty. A Ray
    this process already started (a notebook, a test) is used as it is."""
    if not ray.is_initialized():
        if config.ray_address:
            ray.init(address=config.ray_address, logging_level=logging.WARNING)
        else:
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    # The command line draws its own progress bars; Ray's would interleave with them.
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # a line per dataset run, on every round


class RayEngine:
    """:class:`lsun_crowd.engine.Engine` on Ray Data."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        # A worker without a GPU of its own runs on the CPU whatever the device setting says.
        self.worker_device = config.device if config.ray_gpus_per_worker > 0 else "cpu"

    def _map(
        self, dataset: ray.data.Dataset, worker: type, batch_size: int | None, arguments: dict[str, Any]
    ) -> ray.data.Dataset:
        return dataset.map_batches(
            worker,
            fn_constructor_kwargs={**arguments, "threads": self.config.ray_cpus_per_worker},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=self.config.ray_workers),
            num_cpus=self.config.ray_cpus_per_worker,
            num_gpus=self.config.ray_gpus_per_worker,
        )

    def score(
        self, head: Head, cache: EmbeddingCache, chunks: Iterable[PoolChunk]
    ) -> Iterator[tuple[PoolChunk, NDArray[np.float64]]]:
        pending = iter(chunks)
        saved = head.to_bytes()
        cache.flush()  # the workers open the cache from its files: rows still in memory must be there
        while window := _take_window(pending, SCORE_WINDOW):
            connect(self.config)
            # One block per chunk, scored as one batch.
            blocks = [pyarrow.table({"sha256": [sha for _, sha in chunk]}) for chunk in window]
            dataset = self._map(
                ray.data.from_arrow(blocks),
                _Scorer,
                None,
                {"directory": str(cache.directory), "dim": cache.dim, "head": saved, "device": self.worker_device},
            )
            shas = [sha for chunk in window for _, sha in chunk]
            logits = (batch["logits"] for batch in _in_order(dataset, shas))
            yield from _cut(logits, window)

    def embed(
        self,
        model: EmbeddingModel,
        cache: EmbeddingCache,
        items: Iterable[PoolItem],
        batch_size: int,
        progress: Progress | None = None,
        workers: int | None = None,
    ) -> EmbedReport:
        """As :func:`lsun_crowd.embed.embed_items`, in the same waves and batches; ``workers`` (the
        local engine's decoding processes) does not apply, since the Ray actors decode."""
        report = EmbedReport()
        arguments = {"config": self.config.model_copy(update={"device": self.worker_device}), "key": model.key}
        try:
            # The next wave is checked against the cache after this one's vectors went in.
            for wave in embed_waves(items, cache):
                connect(self.config)
                dataset = self._map(_image_blocks(wave, batch_size), _Embedder, batch_size, arguments)
                for batch in _in_order(dataset, [image.sha256 for image in wave]):
                    _settle(batch, cache, report)
                    if progress is not None:
                        progress(len(batch["sha256"]))
        finally:
            cache.flush()
        return report


def _settle(batch: Batch, cache: EmbeddingCache, report: EmbedReport) -> None:
    """Append an embedding batch's vectors to the cache, and report the images that failed."""
    shas = [str(sha) for sha in batch["sha256"]]
    problems = [str(problem) for problem in batch["problem"]]
    embedded = [row for row, problem in enumerate(problems) if not problem]
    if embedded:
        cache.append([shas[row] for row in embedded], np.asarray(batch["vector"][embedded], dtype=np.float32))
    report.computed += len(embedded)
    report.failed.update({sha: problem for sha, problem in zip(shas, problems, strict=True) if problem})


class _Scorer:
    """One actor's scoring: opens the cache and loads the head once, then scores batch after batch."""

    def __init__(self, directory: str, dim: int, head: bytes, device: str, threads: int) -> None:
        # Many actors share a machine: each keeps to the CPUs Ray gave it.
        torch.set_num_threads(threads)
        self.cache = EmbeddingCache(Path(directory), dim)
        self.head = Head.from_bytes(head, pick_device(device))

    def __call__(self, batch: Batch) -> Batch:
        logits = self.head.logits(self.cache.get([str(sha) for sha in batch["sha256"]]))
        return {"sha256": batch["sha256"], "logits": logits}


class _Embedder:
    """One actor's embedding: builds the backbone the config names (a loaded model, perhaps on the
    driver's GPU, does not travel), then decodes and embeds batch after batch."""

    def __init__(self, config: ModelConfig, key: str, threads: int) -> None:
        torch.set_num_threads(threads)
        from lsun_crowd.plugins import Plugins  # only embedding workers need the backbones

        self.model = Plugins().backbones.get(config.backbone).create(config)
        if self.model.key != key:
            raise EmbeddingError(f"a Ray worker built backbone {self.model.key!r}, the driver {key!r}")

    def __call__(self, batch: Batch) -> Batch:
        images = []
        problems = []
        for sha, uri, size, mtime_ns in zip(
            batch["sha256"], batch["uri"], batch["size"], batch["mtime_ns"], strict=True
        ):
            # -1: ingest recorded no size or mtime, so the file is hashed again.
            file = ImageFile(
                str(sha), str(uri), None if size < 0 else int(size), None if mtime_ns < 0 else int(mtime_ns)
            )
            try:
                images.append(decode(file.uri, read_checked(file)))
                problems.append("")
            except EmbeddingError as error:
                problems.append(str(error))
        vectors = np.zeros((len(problems), self.model.dim), dtype=np.float32)
        if images:
            vectors[[row for row, problem in enumerate(problems) if not problem]] = self.model.embed(images)
        return {"sha256": batch["sha256"], "vector": vectors, "problem": np.array(problems, dtype=object)}


def _take_window(chunks: Iterator[PoolChunk], size: int) -> list[PoolChunk]:
    """Whole chunks, at least ``size`` images in all unless the pool runs out first."""
    window: list[PoolChunk] = []
    held = 0
    for chunk in chunks:
        window.append(chunk)
        held += len(chunk)
        if held >= size:
            break
    return window


def _image_blocks(wave: Sequence[ImageFile], batch_size: int) -> ray.data.Dataset:
    """A dataset of one block per batch, so the batches spread over the actors (a single block
    would go to a single actor)."""
    return ray.data.from_arrow(
        [
            pyarrow.table(
                {
                    "sha256": [image.sha256 for image in batch],
                    "uri": [image.uri for image in batch],
                    "size": [-1 if image.size is None else image.size for image in batch],
                    "mtime_ns": [-1 if image.mtime_ns is None else image.mtime_ns for image in batch],
                }
            )
            for batch in (wave[start : start + batch_size] for start in range(0, len(wave), batch_size))
        ]
    )


def _in_order(dataset: ray.data.Dataset, shas: Sequence[str]) -> Iterator[Batch]:
    """The dataset's output batches, checked to come back as the images went in."""
    position = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        returned = [str(sha) for sha in batch["sha256"]]
        if returned != list(shas[position : position + len(returned)]):
            raise RayEngineError(f"Ray returned images out of order after {position} of {len(shas)}")
        position += len(returned)
        yield batch
    if position != len(shas):
        raise RayEngineError(f"Ray returned {position} of {len(shas)} images")


def _cut(
    logits: Iterable[NDArray[np.float64]], window: list[PoolChunk]
) -> Iterator[tuple[PoolChunk, NDArray[np.float64]]]:
    """The logits, arriving in batches of any size, cut back into the window's chunks."""
    chunks = iter(window)
    chunk = next(chunks, None)
    held: NDArray[np.float64] = np.zeros(0)
    for batch in logits:
        held = np.concatenate([held, np.asarray(batch, dtype=np.float64)])
        while chunk is not None and len(held) >= len(chunk):
            yield chunk, held[: len(chunk)]
            held = held[len(chunk) :]
            chunk = next(chunks, None)
    if chunk is not None or len(held):
        raise RayEngineError("Ray returned logits that do not fill the pool's chunks")
