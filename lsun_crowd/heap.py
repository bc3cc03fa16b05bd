"""Keeping Python's garbage collector off the heap the imports left, during long streamed passes.

A pass over a million images (the split's label writes, building a pool) allocates and frees
hundreds of thousands of containers a chunk: the rows of each bulk insert. Enough of them are
alive at a collection that CPython keeps starting full collections, and a full collection walks
every tracked object, including the 300,000 and more that torch, scipy and SQLAlchemy leave
behind at import. Measured on ``lsun-crowd simulate --items 1000000 --rounds 1``, 90 full
collections took 20.9 s of the split's 49 s of store writes.

:func:`frozen_heap` moves everything alive at its start into CPython's permanent generation
(``gc.freeze``), so collections during the pass walk only what the pass itself made, and puts it
all back (``gc.unfreeze``) when the pass ends: nothing is kept alive that would not have been, and
garbage made during the pass is collected as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Collections inside the block skip the objects alive when it began. Nests: only the
    outermost block freezes and unfreezes."""
    if gc.get_freeze_count() > 0:  # an outer block (or the embedding application) froze already
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
