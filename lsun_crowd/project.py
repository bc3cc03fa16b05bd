"""A project directory opened for work: its config, store, crowd and embedding cache."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import Progress as RichProgress
from sqlalchemy import select, update

from lsun_crowd.config import Config, load_config
from lsun_crowd.crowd import CrowdBackend
from lsun_crowd.embed import EmbeddingCache, PoolItem, cache_directory
from lsun_crowd.engine import engine_for
from lsun_crowd.plugins import Plugins
from lsun_crowd.progress import Progress
from lsun_crowd.schema import Item
from lsun_crowd.store import Store

if TYPE_CHECKING:
    from lsun_crowd.loop import Cascade  # the runner and every step: loaded by commands that run

INGEST_REPORT = "ingest-report.jsonl"
POOL_PAGE = 20_000  # pool images read from the store at a time while embedding
log = logging.getLogger(__name__)


@dataclass
class Project:
    directory: Path
    config: Config
    store: Store
    plugins: Plugins

    @classmethod
    def open(cls, directory: Path, plugins: Plugins | None = None) -> Project:
        directory = directory.resolve()
        config = load_config(directory)
        return cls(directory, config, Store.for_project(directory, config.project.database_url), plugins or Plugins())

    def crowd(self, name: str | None = None) -> CrowdBackend:
        adapter = name or self.config.crowd.adapter
        return self.plugins.create_crowd(adapter, self.config.crowd.settings, self.directory)

    def embedding_cache(self, progress: RichProgress | None = None) -> EmbeddingCache:
        """The cache, after embedding every pool image not yet in it."""
        model = self.plugins.backbones.get(self.config.model.backbone).create(self.config.model)
        cache = EmbeddingCache(cache_directory(self.directory / "cache" / "embeddings", model.key), model.dim)
        missing = sum(int((~cache.contains([item[0] for item in page])).sum()) for page in self._pool_pages())
        if missing:
            task = progress.add_task("embedding images", total=missing) if progress else None
            advance: Callable[[int], None] | None = (
                (lambda n: progress.advance(task, n)) if progress is not None and task is not None else None
            )
            workers = self.config.model.loader_workers
            pool = (item for page in self._pool_pages() for item in page)
            report = engine_for(self.config.model).embed(
                model, cache, pool, self.config.model.batch_size, advance, None if workers == "auto" else workers
            )
            if report.failed:
                with self.store.session() as session:
                    for sha, reason in report.failed.items():
                        session.execute(update(Item).where(Item.sha256 == sha).values(problem=reason))
                for reason in list(report.failed.values())[:10]:
                    log.warning("left out of the pool: %s", reason)
        return cache

    def _pool_pages(self) -> Iterator[list[PoolItem]]:
        """The readable pool images with the file status ingest recorded, by id, a page at a time."""
        after = 0
        while True:
            with self.store.session() as session:
                rows = session.execute(
                    select(Item.id, Item.sha256, Item.uri, Item.file_size, Item.file_mtime_ns)
                    .where(Item.problem.is_(None), Item.id > after)
                    .order_by(Item.id)
                    .limit(POOL_PAGE)
                ).all()
            if not rows:
                return
            after = rows[-1].id
            yield [(row.sha256, row.uri, row.file_size, row.file_mtime_ns) for row in rows]

    def cascade(
        self, crowd: CrowdBackend, progress: Progress | None = None, rich_progress: RichProgress | None = None
    ) -> Cascade:
        from lsun_crowd.loop import Cascade

        return Cascade(self.config, self.store, crowd, lambda: self.embedding_cache(rich_progress), progress)

    def close(self) -> None:
        self.store.close()
