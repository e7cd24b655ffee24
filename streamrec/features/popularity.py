"""Time-decayed item popularity: the ranking for users the model cannot serve yet.

Forward decay (Cormode et al., 2009): an event at time t adds w·2^((t - t0)/h) to its item's score,
so scores never need rescaling and the ranking is the same at every query time. Scores are kept as
log2 to stay finite over years of event time.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

from streamrec.events.schema import EVENT_TYPE_CODE

# A purchase says more about an item's appeal than a browse.
TYPE_WEIGHT = {
    EVENT_TYPE_CODE["browse"]: 1.0,
    EVENT_TYPE_CODE["click"]: 2.0,
    EVENT_TYPE_CODE["purchase"]: 4.0,
}


class DecayedPopularity:
    def __init__(self, half_life_s: float, t0: float = 1.6e9, max_items: int = 200_000) -> None:
        self.half_life_s = half_life_s
        self.t0 = t0
        self.max_items = max(1, max_items)
        self.dropped = 0  # items let go by the max_items bound
        self._log_score: dict[str, float] = {}
        self._top: list[tuple[str, float]] | None = None
        self._stale = 0  # updates since _top was computed

    def __len__(self) -> int:
        return len(self._log_score)

    def add(self, item_id: str, type_code: int, ts: float) -> None:
        x = (ts - self.t0) / self.half_life_s + math.log2(TYPE_WEIGHT.get(type_code, 1.0))
        old = self._log_score.get(item_id)
        if old is None:
            self._log_score[item_id] = x
        else:
            hi, lo = (old, x) if old >= x else (x, old)
            self._log_score[item_id] = hi + math.log2(1.0 + 2.0 ** (lo - hi))
        self._stale += 1
        if len(self._log_score) > self.max_items:
            self._shrink()

    def _shrink(self) -> None:
        """Keep the most popular 90% of max_items (forward decay: the lowest scores are the least
        and longest ago seen). Amortised: a tenth of the bound is added between two shrinks."""
        keep = max(1, self.max_items * 9 // 10)
        kept = heapq.nlargest(keep, self._log_score.items(), key=lambda kv: kv[1])
        self.dropped += len(self._log_score) - len(kept)
        self._log_score = dict(kept)
        self._top = None

    def top(
        self,
        k: int,
        exclude: set[str] | frozenset[str] = frozenset(),
        accept: Callable[[str], bool] | None = None,
    ) -> list[tuple[str, float]]:
        """The k most popular items not in ``exclude`` and passing ``accept``, as (id, log2 score)."""
        # A full scan per query would cost O(items); the ranking moves slowly, so the sorted head
        # is refreshed only after enough updates (bounded staleness, fine for a fallback list).
        stale = self._stale > max(64, len(self._log_score) // 100)
        want = max(4 * k, k + len(exclude))
        if self._top is None or stale or len(self._top) < min(len(self), want):
            self._stale = 0
            self._top = heapq.nlargest(want, self._log_score.items(), key=lambda kv: kv[1])
        while True:
            out = [
                (i, s) for i, s in self._top if i not in exclude and (accept is None or accept(i))
            ]
            if len(out) >= k or len(self._top) >= len(self):
                return out[:k]
            # too many of the head were filtered out: look deeper
            want = 2 * len(self._top)
            self._top = heapq.nlargest(want, self._log_score.items(), key=lambda kv: kv[1])

    def discard(self, item_id: str) -> None:
        if self._log_score.pop(item_id, None) is not None:
            self._top = None
