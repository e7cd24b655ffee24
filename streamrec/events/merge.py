"""Event-time merge of the three type topics, per partition number.

The browse, click and purchase topics are co-partitioned by user, so partition ``p`` of each
holds the same users. Read independently, one topic's partition can run seconds of event time
ahead of another's (a fetch brings thousands of one topic's records at once), and every event of
a user read after a later-stamped one costs an exact rebuild of that user's encoder state instead
of a one-event step. This buffer is the classic k-way merge of three FIFO queues: the head with
the oldest event time is released once each of the other two topics has either advanced past it
(a later event seen) or has nothing more to read right now (caught up with its partition's end).
Otherwise it waits: at most ``behind_wait_s`` for a topic known to have unread records (they are
on their way; in a backlog that is the usual case, and the worker's own model batches take tens
of milliseconds of that wall time), at most ``lateness_s`` for one whose position is not known
yet. Each topic partition's own order (its offsets) is kept.

Correctness never depends on the buffer: an event that arrives after later-stamped ones were
released takes the user state's insert-and-rebuild path, which is exact. The buffer only decides
how often that slower path is needed. It is bounded: past ``max_pending`` events the oldest heads
go out without waiting.
"""

from __future__ import annotations

import enum
import heapq
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


class Lag(enum.Enum):
    CAUGHT_UP = "caught_up"  # nothing more to read right now: holds nothing back
    BEHIND = "behind"  # unread records are known to exist: worth waiting for (behind_wait_s)
    UNKNOWN = "unknown"  # no position known yet (lateness_s)


LagOf = Callable[[str, int], Lag]  # (source, partition) -> how far its reading is


@dataclass(frozen=True, slots=True)
class MergeConfig:
    lateness_s: float = 0.03
    behind_wait_s: float = 10.0
    max_pending: int = 20_000


@dataclass
class MergeStats:
    released_in_order: int = 0  # every other topic had advanced past it or was caught up
    released_late: int = 0  # waited out its bound (lateness_s or behind_wait_s)
    released_forced: int = 0  # pushed out by the max_pending bound


@dataclass(slots=True)
class _Queue(Generic[T]):
    items: deque[tuple[float, float, T]] = field(default_factory=deque)  # (ts, arrived, item)
    newest_ts: float = float("-inf")  # the latest event time this topic partition has shown


class EventTimeMerge(Generic[T]):
    """Holds items (with their event time) per (source, partition); ``release`` hands back the
    ones whose turn has come, oldest event time first within each partition."""

    def __init__(self, sources: Sequence[str], config: MergeConfig | None = None) -> None:
        if not sources:
            raise ValueError("at least one source")
        self.sources = tuple(sources)
        self.config = config or MergeConfig()
        self._queues: dict[tuple[str, int], _Queue[T]] = {}
        self._pending = 0
        self.stats = MergeStats()

    def __len__(self) -> int:
        return self._pending

    def partitions(self) -> set[int]:
        return {p for (_, p), q in self._queues.items() if q.items}

    def push(self, source: str, partition: int, ts: float, item: T, now: float) -> None:
        if source not in self.sources:
            raise ValueError(f"unknown source {source!r}")
        q = self._queue(source, partition)
        q.items.append((ts, now, item))
        if ts > q.newest_ts:
            q.newest_ts = ts
        self._pending += 1

    def _queue(self, source: str, partition: int) -> _Queue[T]:
        key = (source, partition)
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = _Queue()
        return q

    def release(self, now: float, lag: LagOf) -> list[T]:
        """Every item whose turn has come, each partition's in event-time order."""
        out: list[T] = []
        for p in sorted(self.partitions()):
            self._release_partition(p, now, lag, out)
        while self._pending > self.config.max_pending:
            # over the bound: the oldest head of all partitions goes, whatever the others show
            _, p = min((q.items[0][0], p) for (_, p), q in self._queues.items() if q.items)
            self._pop_oldest(p, out)
            self.stats.released_forced += 1
        return out

    def _release_partition(self, p: int, now: float, lag: LagOf, out: list[T]) -> None:
        queues = [self._queue(s, p) for s in self.sources]
        cfg = self.config
        while True:
            heads = [(q.items[0][0], i) for i, q in enumerate(queues) if q.items]
            if not heads:
                return
            ts, i = min(heads)
            arrived = queues[i].items[0][1]
            bound = 0.0  # how long this head may wait for the topics that hold it back
            for j, q in enumerate(queues):
                # A topic with items queued has a head at or after ``ts`` (``ts`` is the minimum).
                if j == i or q.items or q.newest_ts >= ts:
                    continue
                state = lag(self.sources[j], p)
                if state is Lag.BEHIND:
                    bound = max(bound, cfg.behind_wait_s)
                elif state is Lag.UNKNOWN:
                    bound = max(bound, cfg.lateness_s)
            if bound == 0.0:
                self.stats.released_in_order += 1
            elif now - arrived >= bound:
                self.stats.released_late += 1
            else:
                return
            out.append(queues[i].items.popleft()[2])
            self._pending -= 1

    def _pop_oldest(self, p: int, out: list[T]) -> None:
        queues = [q for s in self.sources if (q := self._queue(s, p)).items]
        q = min(queues, key=lambda q: q.items[0][0])
        out.append(q.items.popleft()[2])
        self._pending -= 1

    def remove(self, match: Callable[[T], bool]) -> list[T]:
        """Take out every held item ``match`` picks (a forgotten user's events), oldest first
        within each source partition."""
        out: list[T] = []
        for q in self._queues.values():
            if not any(match(e[2]) for e in q.items):
                continue
            kept = deque(e for e in q.items if not match(e[2]))
            out.extend(e[2] for e in q.items if match(e[2]))
            q.items = kept
        self._pending -= len(out)
        return out

    def holds(self, match: Callable[[T], bool]) -> bool:
        """True when an item ``match`` picks is held (a user idle for the sweep has events here)."""
        return any(match(e[2]) for q in self._queues.values() for e in q.items)

    def next_deadline(self) -> float | None:
        """The earliest wall time at which a waiting head's shortest bound runs out (None: empty);
        a head waiting for a topic that is behind may wait longer: check again then."""
        arrived = [q.items[0][1] for q in self._queues.values() if q.items]
        return min(arrived) + self.config.lateness_s if arrived else None

    def drain(self) -> list[T]:
        """Everything held, each partition in event-time order (shutdown, tests)."""
        out: list[T] = []
        for p in sorted(self.partitions()):
            merged = heapq.merge(
                *(self._queue(s, p).items for s in self.sources), key=lambda e: e[0]
            )
            out.extend(item for _, _, item in merged)
        self._reset(self.partitions())
        return out

    def _reset(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        for key in [k for k in self._queues if k[1] in gone]:
            self._pending -= len(self._queues[key].items)
            del self._queues[key]
