"""The worker's use of Python's cyclic garbage collector (``app.gc_young_objects``).

A worker keeps a few hundred thousand long-lived container objects (the catalog, co-visitation
rows, Faust and aiokafka state). With Python's defaults every full collection walks all of them:
~150 ms each at 100k items, every few hundred lists, landing on whatever batch is being ranked.
So, once the long-lived state is built, it is collected once and then frozen (``gc.freeze``: kept
out of later collections; reference counting still frees it), and the youngest generation is
collected after more allocations than Python's 700. Frozen objects that later become cyclic
garbage would never be found, so the whole heap is collected and frozen again at each model swap
and every ``REFREEZE_S``; what a freeze can hold back is bounded by that.
"""

from __future__ import annotations

import atexit
import gc
import time
from typing import Any

REFREEZE_S = 600.0
_seconds = [0.0, 0.0, 0.0]  # in collections, per generation, in this process
_started = [0.0]


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _seconds[info["generation"]] += time.perf_counter() - _started[0]


class Collector:
    """Applies the thresholds; collections are timed per generation for /metrics/."""

    def __init__(self, young_objects: int) -> None:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(max(1, young_objects), older, oldest)
        self.refreezes = 0
        # gc.get_freeze_count() walks the whole frozen list (O(objects), milliseconds at a few
        # hundred thousand): /metrics/ reads the count taken at the last freeze instead, so a
        # scrape does not stall the event loop
        self.frozen = 0
        if _on_collection not in gc.callbacks:
            gc.callbacks.append(_on_collection)
            # at exit the interpreter's last collection must see everything again (extension
            # objects held in frozen cycles would otherwise never be finalised)
            atexit.register(gc.unfreeze)

    def refreeze(self) -> int:
        """Collect everything (frozen objects too) and freeze what survives; returns how many
        objects are frozen now."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.refreezes += 1
        self.frozen = gc.get_freeze_count()
        return self.frozen

    def gauges(self) -> dict[str, float]:
        out: dict[str, float] = {
            "gc_frozen_objects": float(self.frozen),
            "gc_refreezes": float(self.refreezes),
        }
        for gen, stats in enumerate(gc.get_stats()):
            out[f"gc_collections_gen{gen}"] = float(stats["collections"])
            out[f"gc_seconds_gen{gen}"] = _seconds[gen]
        return out
