"""Synthetic pools: projects of any size without a single image file.

Each item gets a SHA-256 of its number, a ``synthetic://`` URI, a truth per category drawn from the
seed (positives at ``positive_rate``; categories overlap), and an embedding from a class-conditional
mixture: Gaussian noise plus ``separation`` times a fixed direction for every category the item is
positive for. A share ``ambiguous`` of the items sit halfway for every category whatever their truth:
the model cannot tell them apart, so they are what people are left with. Items, gold answers and
embeddings are written in chunks, so building a pool of millions needs memory for one chunk, and
the result is the same store and embedding cache the real ingest and backbones produce: everything
downstream (runner, aggregation, training, the split, ``status``, ``export``) runs unchanged on it.
The pool's recipe (:meth:`SyntheticPool.save`) is what the simulated crowd reads its truth from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from lsun_crowd.embed import EmbeddingCache
from lsun_crowd.heap import frozen_heap
from lsun_crowd.schema import Gold, Item
from lsun_crowd.store import Store, category_id, insert_ignoring_duplicates

URI_PREFIX = "synthetic://"
CHUNK = 50_000
GOLD_PER_CLASS = 10


@dataclass(frozen=True)
class SyntheticPool:
    items: int
    categories: tuple[str, ...]
    dim: int = 16
    positive_rate: float = 0.3
    separation: float = 2.5
    seed: int = 0
    ambiguous: float = 0.0

    def save(self, path: Path) -> None:
        """The pool's recipe, from which :func:`load` rebuilds its truth (the simulated crowd's)."""
        path.write_text(json.dumps({"synthetic_pool": asdict(self)}, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> SyntheticPool:
        try:
            values = json.loads(path.read_text(encoding="utf-8"))["synthetic_pool"]
            values["categories"] = tuple(values["categories"])
            return cls(**values)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a synthetic pool recipe ({type(error).__name__}: {error})") from None

    def uri(self, number: int) -> str:
        return f"{URI_PREFIX}{number}"

    def sha256(self, number: int) -> str:
        return hashlib.sha256(f"synthetic:{self.seed}:{number}".encode()).hexdigest()

    def truth_matrix(self, numbers: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Whether each item is positive for each category, from the seed and the item alone."""
        columns = []
        for index in range(len(self.categories)):
            generator = np.random.default_rng([self.seed, index, 7])
            # A hash of (category, item) through a per-category affine map: the same whatever the chunk.
            a, b = (int(x) for x in generator.integers(1, 2**31 - 1, size=2))
            columns.append(((numbers * a + b) % 1_000_003) / 1_000_003 < self.positive_rate)
        return np.stack(columns, axis=1)

    def number(self, uri: str) -> int:
        return int(uri.removeprefix(URI_PREFIX))

    def ambiguous_items(self, numbers: NDArray[np.int64]) -> NDArray[np.bool_]:
        if self.ambiguous <= 0:
            return np.zeros(len(numbers), dtype=bool)
        a, b = (int(x) for x in np.random.default_rng([self.seed, 17]).integers(1, 2**31 - 1, size=2))
        return ((numbers * a + b) % 999_983) / 999_983 < self.ambiguous

    def truth(self) -> Callable[[str, str], bool]:
        """``truth(uri, category)``, as the simulated crowd asks it."""
        position = {name: index for index, name in enumerate(self.categories)}

        def answer(uri: str, category: str) -> bool:
            number = int(uri.removeprefix(URI_PREFIX))
            return bool(self.truth_matrix(np.array([number], dtype=np.int64))[0, position[category]])

        return answer

    def directions(self) -> NDArray[np.float32]:
        generator = np.random.default_rng([self.seed, 11])
        vectors = generator.normal(size=(len(self.categories), self.dim))
        unit: NDArray[np.float32] = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        return unit

    def embeddings(self, numbers: NDArray[np.int64]) -> NDArray[np.float32]:
        generator = np.random.default_rng([self.seed, 13, int(numbers[0]) if len(numbers) else 0])
        noise = generator.normal(size=(len(numbers), self.dim)).astype(np.float32)
        side = self.truth_matrix(numbers).astype(np.float32)
        side[self.ambiguous_items(numbers)] = 0.5
        shift = side @ self.directions()
        return (noise + np.float32(self.separation) * shift).astype(np.float32)

    def chunks(self) -> Iterator[NDArray[np.int64]]:
        for start in range(0, self.items, CHUNK):
            yield np.arange(start, min(start + CHUNK, self.items), dtype=np.int64)


def synthetic_truth(path: Path) -> Callable[[str, str], bool]:
    """``truth(uri, category)`` of the synthetic pool whose recipe is at ``path``; a ``ValueError``
    naming the file when it is not one."""
    return SyntheticPool.load(path).truth()


def build(pool: SyntheticPool, store: Store, cache: EmbeddingCache) -> None:
    """Write the pool's items, gold answers and embeddings (items already there are kept)."""
    if cache.dim != pool.dim:
        raise ValueError(f"the embedding cache holds {cache.dim} dimensions, the pool {pool.dim}")
    gold: list[tuple[str, str, int]] = []
    wanted = {(index, positive): GOLD_PER_CLASS for index in range(len(pool.categories)) for positive in (0, 1)}
    with frozen_heap():  # a million items' rows pass through; see lsun_crowd.heap
        for numbers in pool.chunks():
            shas = [pool.sha256(int(number)) for number in numbers]
            with store.session() as session:
                insert_ignoring_duplicates(
                    session,
                    Item,
                    [
                        {"sha256": sha, "uri": pool.uri(int(number)), "width": 0, "height": 0}
                        for number, sha in zip(numbers, shas, strict=True)
                    ],
                )
            cache.append(shas, pool.embeddings(numbers))
            # The first clear (not ambiguous) positives and negatives of each category are its gold.
            truth = pool.truth_matrix(numbers)
            clear = ~pool.ambiguous_items(numbers)
            for (index, positive), left in wanted.items():
                rows = np.flatnonzero((truth[:, index] == bool(positive)) & clear)[:left]
                gold += [(shas[row], pool.categories[index], positive) for row in rows]
                wanted[(index, positive)] = left - len(rows)
    cache.flush()
    with store.session() as session:
        ids = {name: category_id(session, name) for name in pool.categories}
        for sha, name, label in gold:
            item = session.query(Item.id).filter(Item.sha256 == sha).scalar()
            insert_ignoring_duplicates(session, Gold, [{"item_id": item, "category_id": ids[name], "answer": label}])
