"""Co-visitation: which items a user touches close in time to which others, as streaming state.

The candidate generator of the strongest public session-recommendation solutions (RecSys
Challenge 2015 and 2019, OTTO 2022): each new event of a user pairs its item with the user's
few previous items inside a short time window, in both directions, weighted by the new event's
type (a purchase next to an item says more than a browse). A user's neighbours are the weights
summed over their last items, the newest counting most.

Bounded by construction, whatever the input: at most ``max_items`` source items (the least
recently touched one is dropped first) with at most ``2 * neighbours`` weights each (pruned back
to the ``neighbours`` heaviest). Weights decay with event time (forward decay, as popularity):
an event at time t adds w·2^((t - t0)/h), so stored weights never need touching as time passes;
``t0`` is moved forward, rescaling everything once, before the factors could overflow.

Pure Python on plain data, shared by the worker (fed with its users' accepted events, seeded
from their stored sequences after a restart), replay and the offline evaluation.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from streamrec.features.popularity import TYPE_WEIGHT

# (item id, type code, ts): a user's event as the sequence keeps it
Visit = tuple[str, int, float]
RESCALE_EXP = 64.0  # move t0 once the forward-decay exponent passes this (2^64 is still exact)


@dataclass(frozen=True, slots=True)
class CoVisitConfig:
    window_s: float = 86400.0  # pair events of one user at most this far apart in event time
    span: int = 5  # ... and at most this many events back
    neighbours: int = 40  # kept per item
    max_items: int = 200_000  # source items kept (least recently touched dropped first)
    half_life_s: float = 7 * 86400.0
    user_items: int = 3  # a user's neighbours are summed over this many last distinct items


class CoVisitation:
    def __init__(self, config: CoVisitConfig | None = None) -> None:
        self.config = config or CoVisitConfig()
        self.t0: float | None = None  # the decay's landmark: the first event time seen
        # item -> {neighbour: forward-decayed weight}; order = least recently touched first
        self._rows: OrderedDict[str, dict[str, float]] = OrderedDict()
        self.pairs_added = 0
        self.items_dropped = 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def n_weights(self) -> int:
        return sum(len(r) for r in self._rows.values())

    # -- updates -------------------------------------------------------------------------------

    def observe(self, previous: Sequence[Visit], new: Visit) -> None:
        """Account ``new`` after the user's ``previous`` events (oldest first; only the last
        ``span`` inside ``window_s`` of it count). Events read out of time order pair the same
        way: the window is on |Δt|."""
        cfg = self.config
        item, code, ts = new
        factor = self._factor(ts)
        w_new = TYPE_WEIGHT.get(code, 1.0) * factor
        seen: set[str] = {item}
        for prev_item, prev_code, prev_ts in reversed(previous[-cfg.span :]):
            if prev_item in seen or abs(ts - prev_ts) > cfg.window_s:
                continue
            seen.add(prev_item)
            self._add(prev_item, item, w_new)
            # the reverse direction is weighted by the earlier event's type
            self._add(item, prev_item, TYPE_WEIGHT.get(prev_code, 1.0) * factor)
            self.pairs_added += 1

    def observe_sequence(self, events: Iterable[Visit]) -> None:
        """Account a user's events in order (a stored sequence, a training history)."""
        span = self.config.span
        history: list[Visit] = []
        for e in events:
            self.observe(history, e)
            history.append(e)
            if len(history) > 4 * span:
                del history[: len(history) - span]

    def _factor(self, ts: float) -> float:
        if self.t0 is None:
            self.t0 = ts
        exp = (ts - self.t0) / self.config.half_life_s
        if exp > RESCALE_EXP:
            self._rescale(ts)
            exp = 0.0
        return 2.0 ** max(exp, -1000.0)

    def _rescale(self, ts: float) -> None:
        assert self.t0 is not None
        scale = 2.0 ** -((ts - self.t0) / self.config.half_life_s)
        for row in self._rows.values():
            for k in row:
                row[k] *= scale
        self.t0 = ts

    def _add(self, a: str, b: str, w: float) -> None:
        rows = self._rows
        row = rows.get(a)
        if row is None:
            row = rows[a] = {}
            if len(rows) > self.config.max_items:
                rows.popitem(last=False)
                self.items_dropped += 1
        else:
            rows.move_to_end(a)
        row[b] = row.get(b, 0.0) + w
        cap = self.config.neighbours
        if len(row) > 2 * cap:
            keep = heapq.nlargest(cap, row.items(), key=lambda kv: kv[1])
            row.clear()
            row.update(keep)

    def discard(self, item_id: str) -> None:
        self._rows.pop(item_id, None)

    # -- reads ---------------------------------------------------------------------------------

    def neighbours(self, item_id: str, n: int | None = None) -> list[tuple[str, float]]:
        """The item's heaviest neighbours with weights relative to now's scale (t0)."""
        row = self._rows.get(item_id)
        if not row:
            return []
        return heapq.nlargest(n or self.config.neighbours, row.items(), key=lambda kv: kv[1])

    def for_user(self, recent_items: Sequence[str], n: int) -> dict[str, float]:
        """Neighbour weights summed over the user's last distinct items (newest first in
        ``recent_items``), the i-th newest weighted 1/(i+1), each row normalised by its heaviest
        weight so a busy item does not drown a quiet one. Returns up to ``n`` item -> score."""
        out: dict[str, float] = {}
        for _, row, scale in self._user_rows(recent_items):
            for b, w in row.items():
                out[b] = out.get(b, 0.0) + w * scale
        if len(out) > n:
            out = dict(heapq.nlargest(n, out.items(), key=lambda kv: kv[1]))
        return out

    def contributions(
        self, recent_items: Sequence[str], item_ids: Iterable[str]
    ) -> dict[str, list[tuple[str, float]]]:
        """For each of ``item_ids``: which of the user's last items make up its score in
        ``for_user``, and how much each adds, heaviest first (the ``because`` of a
        co-visitation explanation); items no last item leads to are left out."""
        rows = self._user_rows(recent_items)
        out: dict[str, list[tuple[str, float]]] = {}
        for item in item_ids:
            parts = [(src, row[item] * scale) for src, row, scale in rows if row.get(item, 0.0) > 0]
            if parts:
                parts.sort(key=lambda kv: -kv[1])
                out[item] = parts
        return out

    def _user_rows(self, recent_items: Sequence[str]) -> list[tuple[str, dict[str, float], float]]:
        """(item, its row, the row's weight in the user's sum) for the user's last items."""
        out = []
        for rank, item in enumerate(recent_items[: self.config.user_items]):
            row = self._rows.get(item)
            if not row:
                continue
            top = max(row.values())
            if top > 0.0:
                out.append((item, row, 1.0 / ((rank + 1) * top)))
        return out
