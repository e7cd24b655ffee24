"""Event logs -> training inputs for the encoder (the same validation as the live path)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from streamrec.events.schema import EVENT_TYPE_CODE
from streamrec.events.validate import Limits, Rejection, parse_event

Sequences = dict[str, list[tuple[str, int, float]]]


def sequences_from_events(
    events: Iterable[Mapping[str, Any]], limits: Limits | None = None
) -> tuple[Sequences, int]:
    """Per-user time-ordered (item, type code, ts), de-duplicated by event id; returns (seqs, rejected)."""
    limits = limits or Limits(max_future_skew_s=float("inf"))
    seqs: dict[str, list[tuple[float, int, str, int]]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    rejected = 0
    for n, raw in enumerate(events):
        etype = str(raw.get("type", ""))
        ev = (
            parse_event(orjson.dumps(raw), etype, None, limits)
            if etype in EVENT_TYPE_CODE
            else None
        )
        if ev is None or isinstance(ev, Rejection):
            rejected += 1
            continue
        if (ev.user_id, ev.event_id) in seen:
            continue
        seen.add((ev.user_id, ev.event_id))
        seqs[ev.user_id].append((ev.ts, n, ev.item_id, ev.type_code))
    return {u: [(i, t, ts) for ts, _, i, t in sorted(s)] for u, s in seqs.items()}, rejected


def items_by_id(items: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(it["item_id"]): dict(it) for it in items}
