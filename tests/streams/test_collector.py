"""The worker's collector settings: frozen long-lived state, garbage still found at a refreeze."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.collector import Collector


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_young_threshold_is_applied_and_the_older_ones_kept():
    _, older, oldest = gc.get_threshold()
    Collector(12_345)
    assert gc.get_threshold() == (12_345, older, oldest)


def test_refreeze_collects_cyclic_garbage_even_when_it_was_frozen_before():
    c = Collector(10_000)
    gc.disable()  # nothing but the refreeze collects here
    try:
        kept = Node()
        garbage = _cycle()
        assert c.refreeze() > 0
        assert garbage() is None  # collected before the freeze, not frozen forever
        late = _cycle()  # frozen while alive (a reference is held), garbage afterwards
        hold = late()
        c.refreeze()
        assert late() is not None and gc.get_freeze_count() > 0
        del hold
        gc.collect()
        assert late() is not None  # frozen: a normal collection does not see it
        c.refreeze()
        assert late() is None  # the next refreeze does
        assert isinstance(kept, Node)
    finally:
        gc.enable()
    g = c.gauges()
    assert g["gc_refreezes"] == 3
    # the count taken at the last freeze (a scrape must not walk the frozen list)
    assert g["gc_frozen_objects"] == gc.get_freeze_count() > 0
    assert g["gc_collections_gen2"] >= 4 and g["gc_seconds_gen2"] > 0
