"""``frozen_heap``: collections inside skip what was alive before; everything is back afterwards."""

from __future__ import annotations

import gc
import weakref

from lsun_crowd.heap import frozen_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_the_heap_is_frozen_inside_and_back_after() -> None:
    gc.collect()
    before = gc.get_freeze_count()
    assert before == 0
    with frozen_heap():
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # the interpreter's and the imports' objects
        with frozen_heap():  # nested: the outer block owns the freeze
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
        # Garbage made inside the block is collected as usual.
        made = Node()
        gone = weakref.ref(made)
        del made
        gc.collect()
        assert gone() is None
    assert gc.get_freeze_count() == 0


def test_an_error_inside_still_unfreezes() -> None:
    try:
        with frozen_heap():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0
