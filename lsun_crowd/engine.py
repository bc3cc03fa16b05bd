"""Where the pool is embedded and scored: in this process, or spread over a Ray cluster.

Two steps grow with the pool and need nothing but the images, the embedding cache and the trained
head: embedding every image once, and scoring the whole pool every round. An :class:`Engine` does
those two; everything else (the store, thresholds, labels, writing the cache) stays with the driver,
so an engine changes how fast a round runs, never what it decides. ``model.engine`` picks one.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from lsun_crowd.classifier import Head
from lsun_crowd.config import ConfigError, ModelConfig
from lsun_crowd.embed import EmbeddingCache, EmbeddingModel, EmbedReport, PoolItem, Progress, embed_items

PoolChunk = list[tuple[int, str]]  # (item id, sha256) in pool order, as ledger.iter_pool yields them
NOT_INSTALLED = (
    'model.engine is "ray", but Ray is not installed here: pip install \'lsun-crowd[ray]\' (or set engine = "local")'
)


class Engine(Protocol):
    def score(
        self, head: Head, cache: EmbeddingCache, chunks: Iterable[PoolChunk]
    ) -> Iterator[tuple[PoolChunk, NDArray[np.float64]]]:
        """Each chunk with its images' logits under ``head`` (:meth:`Head.logits`), in the order
        given. ``chunks`` is read lazily, so the caller may write labels between chunks."""
        ...

    def embed(
        self,
        model: EmbeddingModel,
        cache: EmbeddingCache,
        items: Iterable[PoolItem],
        batch_size: int,
        progress: Progress | None = None,
        workers: int | None = None,
    ) -> EmbedReport:
        """Embed every pool image not yet in ``cache`` into it and make the cache durable, as
        :func:`embed_items` does (``workers``: its decoding processes); an unreadable image is
        reported with its reason and skipped."""
        ...


class LocalEngine:
    """Everything in this process: the head scores chunk after chunk, the backbone embeds batch
    after batch."""

    def score(
        self, head: Head, cache: EmbeddingCache, chunks: Iterable[PoolChunk]
    ) -> Iterator[tuple[PoolChunk, NDArray[np.float64]]]:
        for chunk in chunks:
            yield chunk, head.logits(cache.get([sha for _, sha in chunk]))

    def embed(
        self,
        model: EmbeddingModel,
        cache: EmbeddingCache,
        items: Iterable[PoolItem],
        batch_size: int,
        progress: Progress | None = None,
        workers: int | None = None,
    ) -> EmbedReport:
        return embed_items(model, cache, items, batch_size, progress, workers)


def engine_for(config: ModelConfig) -> Engine:
    """The engine ``config.engine`` names. Ray is imported only when it is chosen, and its absence
    is a configuration error that says how to install it."""
    if config.engine == "local":
        return LocalEngine()
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(NOT_INSTALLED)
    from lsun_crowd.ray_engine import RayEngine

    return RayEngine(config)
