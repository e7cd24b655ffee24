"""Per-user rolling features, kept on plain data so live, replay and offline runs share them.

One compact record per user: the recent event sequence (what the encoder rebuilds from), per-type
counts (total and over rolling windows), purchased items and last activity. Serialized into the
worker's RocksDB table with a small binary codec; its size is bounded by the settings, not by the
user's history (under 4.5 KB at the defaults with every limit full and 10-character item ids).

De-duplication rides on the sequence: each kept event carries a digest of its id, and per event
type ``floors`` holds the newest timestamp among events of that type that fell out of it. An event
whose id is in the sequence is a redelivery. Events of one type arrive on one topic partition in
the producer's order, so an event at or before its type's floor cannot be told apart from one
already counted, and is skipped too: replaying a user's log from the start changes nothing, and a
crash's redelivered tail is counted once. (Floors are per type because the three topics are
consumed independently: across them a user's events may arrive out of time order.) The price: a
new event that its producer emits later than an older-stamped event of the same type that has
already left the kept sequence is not counted.

The sequence is kept in event-time order: an event read after a later-stamped one (from another
topic) is inserted where it belongs, and the encoder rebuilds that user's state.

Retention (``features.retention_days``): each update drops what is older than the retention before
the user's newest event, in event time, so live, replay and offline runs agree: kept events,
window buckets and purchases go, the floors rise past the dropped events (a redelivery of one
stays a duplicate) and the per-type counts shrink to what is kept. A count of events that left the
sequence earlier (past ``sequence_max``) and are newer than the cutoff cannot be told apart from
older ones: until the cutoff passes that type's floor it keeps them, then it is exact again.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

from streamrec.events.schema import EVENT_TYPE_CODE, EVENT_TYPES, Event
from streamrec.settings import FeatureSettings

N_TYPES = len(EVENT_TYPES)
PURCHASE = EVENT_TYPE_CODE["purchase"]
MAGIC = b"U3"  # U1 (no last_applied) and U2 (no purchase times, no horizon) are still read
MAGIC_V2 = b"U2"
MAGIC_V1 = b"U1"
DAY_S = 86400.0
TIMELINE_EVENTS = 20  # the newest events a summary lists with their types and times

SeqEntry = tuple[str, int, float, int]  # (item id, type code, ts, event-id digest)


def event_id_hash(event_id: str) -> int:
    """Stable 63-bit digest of an event id: 8 bytes per remembered id instead of the full string."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big") >> 1


@dataclass(frozen=True, slots=True)
class FeatureLimits:
    sequence_max: int = 100
    purchased_max: int = 50
    windows_s: tuple[int, ...] = (3600, 86400)
    window_buckets: int = 12
    retention_s: float = 0.0  # 0: keep events until the other limits push them out

    @classmethod
    def from_settings(cls, fs: FeatureSettings) -> FeatureLimits:
        return cls(
            fs.sequence_max,
            fs.purchased_max,
            fs.windows_s,
            fs.window_buckets,
            fs.retention_days * DAY_S,
        )


@dataclass(frozen=True, slots=True)
class RecentEvents:
    """A user's last events as of one moment. Taking it costs one slice; the model inputs are
    built only when asked, because the hot path usually needs the newest event alone (an encoder
    cache hit) and building a 99-event tail per event would cost more than the step itself."""

    entries: tuple[SeqEntry, ...]  # the events, after their predecessor when one is stored
    head_gap: float | None  # the first event's gap when no predecessor is stored (else None)

    def __len__(self) -> int:
        return len(self.entries) - (self.head_gap is None)

    def newest(self) -> tuple[str, int, float]:
        """(item id, type code, gap to its predecessor) of the newest event."""
        e = self.entries
        if len(e) == 1:
            gap = self.head_gap if self.head_gap is not None else -1.0
        else:
            gap = _gap(e[-2][2], e[-1][2])
        return e[-1][0], e[-1][1], gap

    def tail(self) -> tuple[list[str], list[int], list[float]]:
        """(item ids, type codes, gaps to their predecessor), oldest first."""
        e = self.entries
        if self.head_gap is None:
            events = e[1:]
            gaps = [_gap(e[i - 1][2], e[i][2]) for i in range(1, len(e))]
        else:
            events = e
            gaps = [self.head_gap] + [_gap(e[i - 1][2], e[i][2]) for i in range(1, len(e))]
        return [x[0] for x in events], [x[1] for x in events], gaps


@dataclass
class UserState:
    """Rolling state of one user. ``apply`` is the only mutator."""

    n_events: int = 0
    seq: list[SeqEntry] = field(default_factory=list)
    last_gap: float = -1.0  # gap of seq[0] to its predecessor (which may have been trimmed)
    floors: list[float] = field(default_factory=lambda: [float("-inf")] * N_TYPES)
    counts: list[int] = field(default_factory=lambda: [0] * N_TYPES)
    # per window: {bucket index: [count per type]}, bucket index = floor(ts / (window / buckets))
    windows: list[dict[int, list[int]]] = field(default_factory=list)
    purchased: list[str] = field(default_factory=list)
    first_ts: float = 0.0
    last_ts: float = 0.0
    # Digest of the event applied last (not always the newest in event time): a redelivery of it
    # may never have had its list published.
    last_applied: int = 0
    purchased_ts: list[float] = field(default_factory=list)  # when each of ``purchased`` was
    horizon: float = float("-inf")  # the newest retention cutoff applied: nothing older is kept
    # Kept events the last ``apply`` dropped for retention (not stored): the encoder's cached
    # state still holds them, so it is rebuilt from what is kept.
    expired: int = field(default=0, compare=False)

    # -- updates -------------------------------------------------------------------------------

    def seen(self, event: Event) -> bool:
        """True when ``event`` was already applied, or is too old to tell (see module doc)."""
        if event.ts <= self.floors[event.type_code]:
            return True
        h = event_id_hash(event.event_id)
        return any(e[3] == h for e in self.seq)

    def apply(self, event: Event, limits: FeatureLimits) -> bool:
        """Fold one event in. Returns False (and changes nothing) for an already seen event."""
        self.expired = 0
        if self.seen(event):
            return False
        code = event.type_code
        self.n_events += 1
        self.last_applied = event_id_hash(event.event_id)
        entry = (event.item_id, code, event.ts, self.last_applied)
        if self.seq and event.ts < self.seq[-1][2]:
            # Each event type has its own topic, so a user's events can be read out of order:
            # keep the sequence in event time (ties in arrival order), as the model was trained.
            self.seq.insert(bisect.bisect_right(self.seq, event.ts, key=_ts), entry)
        else:
            self.seq.append(entry)
        if len(self.seq) > limits.sequence_max:
            drop = len(self.seq) - limits.sequence_max
            self.last_gap = _gap(self.seq[drop - 1][2], self.seq[drop][2])
            for _, code_, ts_, _ in self.seq[:drop]:
                self.floors[code_] = max(self.floors[code_], ts_)
            del self.seq[:drop]
        self.counts[code] += 1
        self._count_in_windows(code, event.ts, limits)
        if code == PURCHASE:
            if event.item_id in self.purchased:
                i = self.purchased.index(event.item_id)
                del self.purchased[i], self.purchased_ts[i]
            self.purchased.append(event.item_id)
            self.purchased_ts.append(event.ts)
            if len(self.purchased) > limits.purchased_max:
                drop = len(self.purchased) - limits.purchased_max
                del self.purchased[:drop], self.purchased_ts[:drop]
        if self.n_events == 1:
            self.first_ts = event.ts
        self.last_ts = max(self.last_ts, event.ts)
        if limits.retention_s > 0:
            cutoff = self.last_ts - limits.retention_s
            if cutoff > self.horizon or event.ts < cutoff:  # else nothing kept can be older
                self.expire(cutoff, limits)
        return True

    def expire(self, cutoff: float, limits: FeatureLimits) -> None:
        """Drop what is older than ``cutoff`` (event time; see the module doc). Cheap when there
        is nothing to drop: the sequence is in event time, so its head says."""
        floors = self.floors
        stale_seq = bool(self.seq) and self.seq[0][2] < cutoff
        stale_floor = any(self.horizon <= f < cutoff for f in floors)
        stale_purchase = bool(self.purchased_ts) and min(self.purchased_ts) < cutoff
        if not (stale_seq or stale_floor or stale_purchase):
            # Nothing kept is older; the windows age out on their own (they are shorter).
            self.horizon = max(self.horizon, cutoff)
            self.first_ts = max(self.first_ts, cutoff)
            return
        drop = bisect.bisect_left(self.seq, cutoff, key=_ts)
        dropped = [0] * N_TYPES
        for _, code, ts, _ in self.seq[:drop]:
            floors[code] = max(floors[code], ts)
            dropped[code] += 1
        if drop:
            # The first kept event starts the kept history: its gap to an expired one would keep
            # a trace of what is gone.
            self.last_gap = -1.0
            del self.seq[:drop]
        kept = [0] * N_TYPES
        for _, code, _, _ in self.seq:
            kept[code] += 1
        for t in range(N_TYPES):
            # Every event of type t that left the sequence earlier is at or before floors[t]:
            # past the cutoff, all of them are gone and the kept ones are the whole count.
            if floors[t] < cutoff:
                self.counts[t] = kept[t]
            else:
                self.counts[t] = max(kept[t], self.counts[t] - dropped[t])
        for buckets, window in zip(self.windows, limits.windows_s, strict=False):
            width = window / limits.window_buckets
            for b in [b for b in buckets if (b + 1) * width <= cutoff]:
                del buckets[b]
        keep = [i for i, ts in enumerate(self.purchased_ts) if ts >= cutoff]
        if len(keep) < len(self.purchased):
            self.purchased = [self.purchased[i] for i in keep]
            self.purchased_ts = [self.purchased_ts[i] for i in keep]
        self.horizon = max(self.horizon, cutoff)
        self.first_ts = max(self.first_ts, cutoff)
        self.expired = drop

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

    def position_of(self, event: Event) -> int | None:
        """Where an applied event sits in the user's whole history (event-time order); None once
        it has left the kept sequence."""
        h = event_id_hash(event.event_id)
        for i in range(len(self.seq) - 1, -1, -1):
            if self.seq[i][3] == h:
                return self.n_events - len(self.seq) + i
        return None

    def is_last_applied(self, event: Event) -> bool:
        """True when ``event`` is the one applied last (a redelivery of it may lack its list)."""
        return self.n_events > 0 and self.last_applied == event_id_hash(event.event_id)

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

    def recent(self, n: int) -> RecentEvents:
        """A snapshot of the last ``n`` events (one slice; see ``RecentEvents``)."""
        start = max(0, len(self.seq) - n)
        if start == 0:
            return RecentEvents(tuple(self.seq), self.last_gap)
        return RecentEvents(tuple(self.seq[start - 1 :]), None)

    def tail(self, n: int) -> tuple[list[str], list[int], list[float]]:
        """The last ``n`` events as (item ids, type codes, gaps to their predecessor)."""
        return self.recent(n).tail()

    # -- storage -------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        out = bytearray(MAGIC)
        out += _HEAD.pack(self.n_events, self.last_gap, self.first_ts, self.last_ts)
        out += _COUNTS.pack(*self.counts)
        out += _FLOORS.pack(*self.floors)
        out += _U16.pack(len(self.seq))
        for item, code, ts, h in self.seq:
            out += _SEQ.pack(code, ts, h)
            _put_str(out, item)
        out += _U16.pack(len(self.windows))
        for buckets in self.windows:
            out += _U16.pack(len(buckets))
            for b, c in buckets.items():
                out += _BUCKET.pack(b, *c)
        out += _U16.pack(len(self.purchased))
        for item in self.purchased:
            _put_str(out, item)
        out += _U64.pack(self.last_applied)
        for ts in self.purchased_ts:
            out += _F64.pack(ts)
        out += _F64.pack(self.horizon)
        return bytes(out)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> UserState:
        if not raw:
            return cls()
        version = raw[:2]
        if version not in (MAGIC, MAGIC_V2, MAGIC_V1):
            raise ValueError(f"not a user-state record (starts with {raw[:2]!r})")
        r = _Reader(raw, 2)
        n_events, last_gap, first_ts, last_ts = r.unpack(_HEAD)
        counts = list(r.unpack(_COUNTS))
        floors = list(r.unpack(_FLOORS))
        seq: list[SeqEntry] = []
        for _ in range(r.unpack(_U16)[0]):
            code, ts, h = r.unpack(_SEQ)
            seq.append((r.string(), code, ts, h))
        windows: list[dict[int, list[int]]] = []
        for _ in range(r.unpack(_U16)[0]):
            buckets: dict[int, list[int]] = {}
            for _ in range(r.unpack(_U16)[0]):
                b, *c = r.unpack(_BUCKET)
                buckets[b] = list(c)
            windows.append(buckets)
        purchased = [r.string() for _ in range(r.unpack(_U16)[0])]
        last_applied = seq[-1][3] if seq else 0  # U1: the newest kept event stands in
        if version != MAGIC_V1:
            last_applied = r.unpack(_U64)[0]
        if version == MAGIC:
            purchased_ts = [r.unpack(_F64)[0] for _ in purchased]
            (horizon,) = r.unpack(_F64)
        else:
            # U1/U2 kept no purchase times: the item's newest kept purchase event stands in, else
            # the purchase floor (the purchase was at or before it, so under retention it may
            # stay up to that much longer, never go early).
            when = {i: ts for i, c, ts, _ in seq if c == PURCHASE}
            purchased_ts = [when.get(i, floors[PURCHASE]) for i in purchased]
            horizon = float("-inf")
        if r.pos != len(raw):
            raise ValueError(f"user-state record has {len(raw) - r.pos} trailing bytes")
        return cls(
            n_events, seq, last_gap, floors, counts, windows, purchased, first_ts, last_ts,
            last_applied, purchased_ts, horizon,
        )  # fmt: skip

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
            # newest last: (item, type, event time)
            "timeline": [[e[0], EVENT_TYPES[e[1]], e[2]] for e in self.seq[-TIMELINE_EVENTS:]],
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }


def last_activity(raw: bytes) -> float:
    """The newest event time of a stored record, read without decoding it (the retention sweep
    looks at every user)."""
    if raw[:2] not in (MAGIC, MAGIC_V2, MAGIC_V1) or len(raw) < 2 + _HEAD.size:
        raise ValueError(f"not a user-state record (starts with {raw[:2]!r})")
    return float(_HEAD.unpack_from(raw, 2)[3])


def _ts(entry: SeqEntry) -> float:
    return entry[2]


def _gap(prev_ts: float, ts: float) -> float:
    # Out-of-order events (clock skew between producers) count as simultaneous, never negative.
    return max(0.0, ts - prev_ts)


# Little-endian layout: magic, head, counts, floors, seq (type, ts, id digest, item), windows,
# purchased, last applied, purchase times, horizon.
_HEAD = struct.Struct("<Qddd")
_COUNTS = struct.Struct(f"<{N_TYPES}Q")
_FLOORS = struct.Struct(f"<{N_TYPES}d")
_SEQ = struct.Struct("<BdQ")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_BUCKET = struct.Struct(f"<q{N_TYPES}I")
_U16 = struct.Struct("<H")
_U8 = struct.Struct("<B")


def _put_str(out: bytearray, s: str) -> None:
    # one length byte for the usual short id, 0xFF + u16 for longer ones
    b = s.encode()
    if len(b) < 0xFF:
        out.append(len(b))
    else:
        out.append(0xFF)
        out += _U16.pack(len(b))
    out += b


class _Reader:
    def __init__(self, raw: bytes, pos: int) -> None:
        self.raw, self.pos = raw, pos

    def unpack(self, st: struct.Struct) -> tuple[Any, ...]:
        if self.pos + st.size > len(self.raw):
            raise ValueError("truncated user-state record")
        out = st.unpack_from(self.raw, self.pos)
        self.pos += st.size
        return out

    def string(self) -> str:
        (n,) = self.unpack(_U8)
        if n == 0xFF:
            (n,) = self.unpack(_U16)
        if self.pos + n > len(self.raw):
            raise ValueError("truncated user-state record")
        s = self.raw[self.pos : self.pos + n].decode()
        self.pos += n
        return s
