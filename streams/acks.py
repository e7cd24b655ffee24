"""Acks handed to Faust in offset order, per topic partition.

The worker finishes events out of their read order: a bad event is dead-lettered at once while
the valid ones read before it wait in the event-time merge or the micro-batcher, and a duplicate
is dropped while its predecessors are still being ranked. Faust commits the end of the first run
of consecutive acked offsets, and it checks that run against the committed offset loosely: with
nothing committed yet it does not check at all, and otherwise it lets one unacked offset through
(faust-streaming 0.15.3, ``Consumer._new_offset``). An ack out of order could therefore commit
an event that was never applied, and a crash would lose it. Here an event's ack is held back
until every event read before it on its topic partition (in the same consumer generation) is
done, so Faust only ever sees acks in offset order.

An event that never finishes holds back its partition's commits from there on: the worker's lag
grows, loudly, and nothing is lost.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class _Entry:
    event: Any
    done: bool = False


def _queue_key(message: Any) -> tuple[str, int, Any]:
    # A rebalance re-reads from the committed offset under a new generation: the re-read copies
    # queue apart from the old generation's, whose acks Faust no longer counts.
    return message.topic, message.partition, getattr(message, "generation_id", None)


class InOrderAcks:
    """``read`` every event as it is received, ``ack`` it when its effects are done."""

    def __init__(self) -> None:
        self._queues: dict[tuple[str, int, Any], deque[_Entry]] = {}
        self._entries: dict[int, _Entry] = {}  # id(message): alive while its entry is queued

    def __len__(self) -> int:
        """Events read and not yet acked to Faust (done ones waiting for predecessors too)."""
        return len(self._entries)

    def read(self, event: Any) -> None:
        entry = _Entry(event)
        self._queues.setdefault(_queue_key(event.message), deque()).append(entry)
        self._entries[id(event.message)] = entry

    def ack(self, event: Any) -> None:
        msg = event.message
        entry = self._entries.get(id(msg))
        if entry is None:  # never read through here (or acked already): Faust's own rules
            event.ack()
            return
        entry.done = True
        key = _queue_key(msg)
        queue = self._queues[key]
        while queue and queue[0].done:
            head = queue.popleft()
            del self._entries[id(head.event.message)]
            head.event.ack()
        if not queue:
            del self._queues[key]

    def waiting(self) -> dict[tuple[str, int], int]:
        """Per topic partition, how many events wait behind one that is not done yet."""
        out: dict[tuple[str, int], int] = {}
        for (topic, partition, _), queue in self._queues.items():
            out[(topic, partition)] = out.get((topic, partition), 0) + len(queue)
        return out
