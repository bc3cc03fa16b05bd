"""The cascade: per category, rounds of sample → publish → collect → review → label → train → split.

Each step ends with one committed transaction that moves the round to its next state, and each
step can be repeated after a crash without effect on anything already stored: samples and HIT
layouts derive from the seed, HITs are published idempotently by batch id, votes are unique per
assignment and item, and platform calls (approve, block) are idempotent. So a run killed at any
point and started again ends exactly where an uninterrupted run would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from sqlalchemy import select

from lsun_crowd.autolabel import train_and_split
from lsun_crowd.collect import collect
from lsun_crowd.config import Config
from lsun_crowd.context import (
    COLLECTED,
    DONE,
    LABELED,
    PUBLISHED,
    PUBLISHING,
    REVIEWED,
    SAMPLED,
    STOPPED,
    Context,
    Progress,
    RoundRef,
    pool_ids,
    rng,
)
from lsun_crowd.crowd import CrowdBackend
from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.publish import check_money, publish, spent_so_far
from lsun_crowd.review import label_by_humans, review
from lsun_crowd.schema import Round, RoundItem
from lsun_crowd.store import Store, category_id

STEPS: dict[str, Callable[[Context, RoundRef], str]] = {
    SAMPLED: check_money,
    PUBLISHING: publish,
    PUBLISHED: collect,
    COLLECTED: review,
    REVIEWED: label_by_humans,
    LABELED: train_and_split,
}


@dataclass(frozen=True)
class CategoryOutcome:
    category: str
    rounds: int
    reason: str  # resolved | round limit | budget | balance


class Cascade:
    def __init__(
        self,
        config: Config,
        store: Store,
        crowd: CrowdBackend,
        embeddings: Callable[[], EmbeddingCache],
        progress: Progress | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.store = store
        cache: list[EmbeddingCache] = []

        def embeddings_once() -> EmbeddingCache:
            if not cache:
                cache.append(embeddings())
            return cache[0]

        self.context = Context(config, store, crowd, progress or Progress(), embeddings_once, sleep)

    def spent(self) -> Decimal:
        return spent_so_far(self.store)

    def run(self, categories: list[str] | None = None, max_rounds: int | None = None) -> list[CategoryOutcome]:
        names = categories or self.config.project.categories
        if not names:
            raise ValueError("no categories: list them in [project] categories of lsun-crowd.toml")
        # Embed the pool first: an image that cannot be read leaves the pool before anyone sees it.
        self.context.embeddings()
        return [self.run_category(name, max_rounds) for name in names]

    def run_category(self, category: str, max_rounds: int | None = None) -> CategoryOutcome:
        limit = max_rounds or self.config.cascade.max_rounds
        with self.store.session() as session:
            cat_id = category_id(session, category)
        while True:
            with self.store.session() as session:
                latest = session.scalars(
                    select(Round).where(Round.category_id == cat_id).order_by(Round.number.desc()).limit(1)
                ).first()
            if latest is not None and latest.state == STOPPED:
                # Stopped for money last time: go on only if a raised budget or a top-up allows it.
                ref = RoundRef(category, cat_id, latest)
                if check_money(self.context, ref) == STOPPED:
                    return CategoryOutcome(category, latest.number - 1, _stop_reason(self.store, latest.id))
                latest.state = PUBLISHING
            if latest is None or latest.state == DONE:
                done = latest.number if latest else 0
                with self.store.session() as session:
                    remaining = len(pool_ids(session, cat_id))
                if remaining == 0:
                    return CategoryOutcome(category, done, "resolved")
                if done >= limit:
                    return CategoryOutcome(category, done, "round limit")
                latest = self._sample(category, cat_id, done + 1)
            self._advance(RoundRef(category, cat_id, latest))

    def _advance(self, ref: RoundRef) -> None:
        state = ref.round.state
        while state in STEPS:
            state = STEPS[state](self.context, ref)

    def _sample(self, category: str, cat_id: int, number: int) -> Round:
        cascade = self.config.cascade
        with self.store.session() as session:
            pool = np.array(pool_ids(session, cat_id), dtype=np.int64)
            human_only = len(pool) <= cascade.finish_with_humans_below
            # Never more than half the pool: the other half is what the model is there to label.
            size = min(cascade.sample_per_round, len(pool) // 2)
            generator = rng(self.config.project.seed, cat_id, number, 1)
            chosen = np.sort(pool if human_only else generator.choice(pool, size=size, replace=False))
            calibration = np.zeros(len(chosen), dtype=bool)
            if not human_only:
                count = round(len(chosen) * cascade.calibration_fraction)
                calibration[generator.choice(len(chosen), size=count, replace=False)] = True
            round_ = Round(category_id=cat_id, number=number, state=SAMPLED, human_only=bool(human_only))
            session.add(round_)
            session.flush()
            session.add_all(
                RoundItem(round_id=round_.id, item_id=int(item), role="calibration" if held else "train")
                for item, held in zip(chosen, calibration, strict=True)
            )
        kind = "the rest of the pool, all to humans" if human_only else f"{len(chosen)} of {len(pool)}"
        self.context.progress.message(f"{category}: round {number}: sampled {kind}")
        return round_


def _stop_reason(store: Store, round_id: int) -> str:
    """``budget`` or ``balance``: the first word of the note the money check left."""
    with store.session() as session:
        notes = session.scalar(select(Round.notes).where(Round.id == round_id)) or "budget"
    return notes.split(":")[0]
