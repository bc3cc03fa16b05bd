"""The cascade: per category, rounds of sample → publish → collect → review → label → train → split,
every category side by side (see :mod:`lsun_crowd.runner`).

Each step ends with one committed transaction that moves its round or job to the next state, and
each step can be repeated after a crash without effect on anything already stored: samples and HIT
layouts derive from the seed, HITs are published idempotently by batch id, votes are unique per
assignment and item, and platform calls (approve, block) are idempotent. So a run killed at any
point and started again ends exactly where an uninterrupted run would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

from lsun_crowd.config import Config
from lsun_crowd.context import Context, Progress
from lsun_crowd.crowd import CrowdBackend
from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.publish import spent_so_far
from lsun_crowd.runner import CategoryOutcome, Runner
from lsun_crowd.store import Store

__all__ = ["Cascade", "CategoryOutcome"]


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

    def runner(self, categories: list[str] | None = None, max_rounds: int | None = None) -> Runner:
        names = categories or self.config.project.categories
        return Runner(self.context, list(names), max_rounds or self.config.cascade.max_rounds)

    def run(
        self, categories: list[str] | None = None, max_rounds: int | None = None, once: bool = False
    ) -> list[CategoryOutcome]:
        """Every category side by side until each is finished (one pass with ``once``)."""
        return self.runner(categories, max_rounds).run(once=once)
