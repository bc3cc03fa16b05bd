"""Score histograms of each round's model, with the thresholds its split chose.

A round's head (``round_models``) scores two bounded sets of cached embeddings: the images the
round sent to people, split by the label people gave them, and one random sample of the pool
shared by every round. Only counts per bin are kept, so memory stays bounded whatever the pool.
Images without a cached embedding are left out, and nothing is embedded: the report never runs
the backbone on images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select

from lsun_crowd.classifier import Head
from lsun_crowd.config import Config
from lsun_crowd.embed import EmbeddingCache, EmbeddingError, cache_directory, pick_device
from lsun_crowd.plugins import PluginError, Plugins
from lsun_crowd.schema import Item, Label, LabelSource, Round, RoundItem, RoundModel
from lsun_crowd.store import Store

POOL_SAMPLE = 2000  # images of the pool every round's head scores
ROUND_ITEMS = 5000  # at most this many of a round's own images
BINS = 40
ID_CHUNK = 500  # ids bound per query

PEOPLE_POSITIVE = "people: positive"
PEOPLE_NEGATIVE = "people: negative"
PEOPLE_UNRESOLVED = "people: no label"
POOL = "pool sample"
GROUPS = (POOL, PEOPLE_NEGATIVE, PEOPLE_POSITIVE, PEOPLE_UNRESOLVED)


@dataclass(frozen=True)
class ScoreHistogram:
    round_id: int
    category_id: int
    number: int
    edges: NDArray[np.float64]  # logits; the outer bins also count what lies beyond them
    counts: dict[str, NDArray[np.int64]]  # group -> count per bin
    high_threshold: float | None
    low_threshold: float | None


@dataclass(frozen=True)
class Scores:
    histograms: list[ScoreHistogram]
    note: str  # why there are none, or what was left out; "" when nothing needs saying


def round_histograms(store: Store, config: Config, directory: Path, plugins: Plugins, seed: int = 0) -> Scores:
    with store.session() as session:
        models = session.execute(
            select(RoundModel.round_id, Round.category_id, Round.number, Round.high_threshold, Round.low_threshold)
            .join(Round, Round.id == RoundModel.round_id)
            .order_by(Round.category_id, Round.number)
        ).all()
    if not models:
        return Scores([], "no round has trained a model yet")
    try:
        cache = _open_cache(config, directory, plugins)
    except (EmbeddingError, PluginError) as error:  # e.g. the backbone's weights are not on this machine
        return Scores([], f"the scores cannot be shown: {error}")
    if cache is None:
        return Scores([], "no embeddings are cached for this project's backbone, so no image can be scored")
    pool = [sha for sha in pool_sample(store, POOL_SAMPLE, seed) if sha in cache]
    pool_vectors = cache.get(pool)
    histograms = []
    missing = 0
    for round_id, category_id, number, high, low in models:
        with store.session() as session:
            head_bytes = session.scalar(select(RoundModel.head).where(RoundModel.round_id == round_id))
            items = session.execute(
                select(Item.sha256, Label.label, Label.source)
                .select_from(RoundItem)
                .join(Item, Item.id == RoundItem.item_id)
                .outerjoin(Label, (Label.item_id == RoundItem.item_id) & (Label.category_id == category_id))
                .where(RoundItem.round_id == round_id)
                .order_by(RoundItem.item_id)
                .limit(ROUND_ITEMS)
            ).all()
        if head_bytes is None:
            continue
        head = Head.from_bytes(head_bytes, pick_device("cpu"))
        groups: dict[str, list[str]] = {PEOPLE_POSITIVE: [], PEOPLE_NEGATIVE: [], PEOPLE_UNRESOLVED: []}
        for sha, label, source in items:
            if sha not in cache:
                missing += 1
                continue
            if label is None or source == LabelSource.MODEL:
                groups[PEOPLE_UNRESOLVED].append(sha)
            else:
                groups[PEOPLE_POSITIVE if label == 1 else PEOPLE_NEGATIVE].append(sha)
        scores = {name: head.logits(cache.get(shas)) for name, shas in groups.items()}
        scores[POOL] = head.logits(pool_vectors)
        edges = _edges(np.concatenate(list(scores.values())), high, low)
        histograms.append(
            ScoreHistogram(
                round_id,
                category_id,
                number,
                edges,
                {name: _count(values, edges) for name, values in scores.items()},
                high,
                low,
            )
        )
    note = f"{missing} of the rounds' images have no cached embedding and are left out" if missing else ""
    return Scores(histograms, note)


def _open_cache(config: Config, directory: Path, plugins: Plugins) -> EmbeddingCache | None:
    """The project's embedding cache for its backbone, or ``None`` where nothing is cached."""
    model = plugins.backbones.get(config.model.backbone).create(config.model)
    location = cache_directory(directory / "cache" / "embeddings", model.key)
    if not location.is_dir():
        return None
    cache = EmbeddingCache(location, model.dim)
    return cache if len(cache) else None


def pool_sample(store: Store, size: int, seed: int) -> Iterator[str]:
    """The hashes of about ``size`` readable images drawn at random by id: a draw of ids between
    the smallest and the largest, looked up ``ID_CHUNK`` at a time (ids left by deleted rows are
    skipped), so the cost follows the sample, not the pool."""
    with store.session() as session:
        lowest, highest = session.execute(select(func.min(Item.id), func.max(Item.id))).one()
    if lowest is None:
        return
    span = int(highest) - int(lowest) + 1
    generator = np.random.default_rng(seed)
    ids = np.sort(generator.choice(span, size=min(size, span), replace=False) + int(lowest))
    for start in range(0, len(ids), ID_CHUNK):
        chunk = [int(i) for i in ids[start : start + ID_CHUNK]]
        with store.session() as session:
            yield from session.scalars(
                select(Item.sha256).where(Item.id.in_(chunk), Item.problem.is_(None)).order_by(Item.id)
            )


def _edges(values: NDArray[np.float64], high: float | None, low: float | None) -> NDArray[np.float64]:
    """Bins over the bulk of the scores and both thresholds; logits of a confident head run far
    out, and a few extreme ones would squeeze everything else into one bin."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        finite = np.zeros(1)
    start, stop = (float(x) for x in np.percentile(finite, [0.5, 99.5]))
    for threshold in (high, low):
        if threshold is not None:
            start, stop = min(start, threshold), max(stop, threshold)
    margin = max((stop - start) * 0.05, 0.5)
    return np.linspace(start - margin, stop + margin, BINS + 1)


def _count(values: NDArray[np.float64], edges: NDArray[np.float64]) -> NDArray[np.int64]:
    clipped = np.clip(values[np.isfinite(values)], edges[0], edges[-1])
    counts, _ = np.histogram(clipped, bins=edges)
    return counts.astype(np.int64)
