"""Per-user rolling features, kept on plain data so live, replay and offline runs share them.

One compact record per user: the recent event sequence (what the encoder rebuilds from), per-type
counts (total and over rolling windows), purchased items, last activity and the ids of recent
events (so a redelivered or replayed event is counted once). Serialized with orjson into the
worker's RocksDB table; its size is bounded by the settings, not by the user's history.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamrec.events.schema import EVENT_TYPE_CODE, EVENT_TYPES, Event
from streamrec.settings import FeatureSettings

N_TYPES = len(EVENT_TYPES)
PURCHASE = EVENT_TYPE_CODE["purchase"]
STATE_VERSION = 1


def event_id_hash(event_id: str) -> int:
    """Stable 63-bit digest of an event id: 8 bytes per remembered id instead of the full string."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big") >> 1


@dataclass(frozen=True, slots=True)
class FeatureLimits:
    sequence_max: int = 128
    dedup_ids: int = 512
    purchased_max: int = 256
    windows_s: tuple[int, ...] = (3600, 86400)
    window_buckets: int = 24

    @classmethod
    def from_settings(cls, fs: FeatureSettings) -> FeatureLimits:
        return cls(fs.sequence_max, fs.dedup_ids, fs.purchased_max, fs.windows_s, fs.window_buckets)


@dataclass
class UserState:
    """Rolling state of one user. ``apply`` is the only mutator."""

    n_events: int = 0
    seq: list[tuple[str, int, float]] = field(default_factory=list)  # (item_id, type code, ts)
    last_gap: float = -1.0  # gap of seq[0] to its predecessor (seq[0] may be past the trimmed head)
    counts: list[int] = field(default_factory=lambda: [0] * N_TYPES)
    # per window: {bucket index: [count per type]}, bucket index = floor(ts / (window / buckets))
    windows: list[dict[int, list[int]]] = field(default_factory=list)
    purchased: list[str] = field(default_factory=list)
    recent_ids: list[int] = field(default_factory=list)
    first_ts: float = 0.0
    last_ts: float = 0.0

    # -- updates -------------------------------------------------------------------------------

    def apply(self, event: Event, limits: FeatureLimits) -> bool:
        """Fold one event in. Returns False (and changes nothing) for an already seen event id."""
        h = event_id_hash(event.event_id)
        if h in self.recent_ids:
            return False
        self.recent_ids.append(h)
        if len(self.recent_ids) > limits.dedup_ids:
            del self.recent_ids[: len(self.recent_ids) - limits.dedup_ids]

        code = event.type_code
        self.n_events += 1
        self.seq.append((event.item_id, code, event.ts))
        if len(self.seq) > limits.sequence_max:
            drop = len(self.seq) - limits.sequence_max
            self.last_gap = _gap(self.seq[drop - 1][2], self.seq[drop][2])
            del self.seq[:drop]
        self.counts[code] += 1
        self._count_in_windows(code, event.ts, limits)
        if code == PURCHASE:
            if event.item_id in self.purchased:
                self.purchased.remove(event.item_id)
            self.purchased.append(event.item_id)
            if len(self.purchased) > limits.purchased_max:
                del self.purchased[: len(self.purchased) - limits.purchased_max]
        if self.n_events == 1:
            self.first_ts = event.ts
        self.last_ts = max(self.last_ts, event.ts)
        return True

    def _count_in_windows(self, code: int, ts: float, limits: FeatureLimits) -> None:
        while len(self.windows) < len(limits.windows_s):
            self.windows.append({})
        newest = max(self.last_ts, ts)
        for w, window in enumerate(limits.windows_s):
            width = window / limits.window_buckets
            buckets = self.windows[w]
            b = int(ts // width)
            oldest = int(newest // width) - limits.window_buckets + 1
            if b >= oldest:
                buckets.setdefault(b, [0] * N_TYPES)[code] += 1
            for stale in [k for k in buckets if k < oldest]:
                del buckets[stale]

    # -- reads ---------------------------------------------------------------------------------

    def window_counts(self, window_s: int, now: float, limits: FeatureLimits) -> list[int]:
        """Events per type in the last ``window_s`` seconds of event time (bucket resolution)."""
        w = limits.windows_s.index(window_s)
        width = window_s / limits.window_buckets
        oldest = int(now // width) - limits.window_buckets + 1
        out = [0] * N_TYPES
        if w < len(self.windows):
            for b, c in self.windows[w].items():
                if b >= oldest:
                    for i in range(N_TYPES):
                        out[i] += c[i]
        return out

    def tail(self, n: int) -> tuple[list[str], list[int], list[float]]:
        """The last ``n`` events as (item ids, type codes, gaps to their predecessor)."""
        start = max(0, len(self.seq) - n)
        items = [e[0] for e in self.seq[start:]]
        types = [e[1] for e in self.seq[start:]]
        gaps = [
            (self.last_gap if i == 0 else _gap(self.seq[i - 1][2], self.seq[i][2]))
            for i in range(start, len(self.seq))
        ]
        return items, types, gaps

    # -- storage -------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "v": STATE_VERSION,
                "n": self.n_events,
                "seq": self.seq,
                "g": self.last_gap,
                "c": self.counts,
                "w": [{str(k): v for k, v in b.items()} for b in self.windows],
                "p": self.purchased,
                "ids": self.recent_ids,
                "t0": self.first_ts,
                "t1": self.last_ts,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> UserState:
        if not raw:
            return cls()
        d: dict[str, Any] = orjson.loads(raw)
        if d.get("v") != STATE_VERSION:
            raise ValueError(f"unsupported user-state version {d.get('v')!r}")
        return cls(
            n_events=d["n"],
            seq=[(e[0], e[1], e[2]) for e in d["seq"]],
            last_gap=d["g"],
            counts=d["c"],
            windows=[{int(k): v for k, v in b.items()} for b in d["w"]],
            purchased=d["p"],
            recent_ids=d["ids"],
            first_ts=d["t0"],
            last_ts=d["t1"],
        )

    def summary(self, limits: FeatureLimits) -> dict[str, Any]:
        """A readable view (CLI, web, tests)."""
        return {
            "events": self.n_events,
            "counts": dict(zip(EVENT_TYPES, self.counts, strict=True)),
            "windows": {
                f"{w}s": dict(
                    zip(EVENT_TYPES, self.window_counts(w, self.last_ts, limits), strict=True)
                )
                for w in limits.windows_s
            },
            "purchased": list(self.purchased),
            "recent": [e[0] for e in self.seq[-10:]],
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }


def _gap(prev_ts: float, ts: float) -> float:
    # Out-of-order events (clock skew between producers) count as simultaneous, never negative.
    return max(0.0, ts - prev_ts)
