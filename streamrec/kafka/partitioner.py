"""A keyed partitioner that remembers its answers: kafka-python's default choice, computed once.

kafka-python hashes every key in pure Python (murmur2) and sorts the partition list on every
send, a few microseconds per record; a replay sends each user's key many times, so caching the
answer per (topic, key) is a large share of the client's per-record cost. The choice itself is
DefaultPartitioner's (the Java client's), so records land where any other producer puts them.
"""

from __future__ import annotations

from typing import Any

from kafka.partitioner import DefaultPartitioner

_MAX_ENTRIES = 1_000_000  # about 100 MB of keys; past it, start over rather than grow unbounded


class CachedKeyPartitioner(DefaultPartitioner):
    """DefaultPartitioner with a per-(topic, key) cache, invalidated when a topic's partition
    count changes. Records without a key go to DefaultPartitioner unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[tuple[str, bytes], tuple[int, int]] = {}

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        if serialized_key is None:
            return int(super().partition(topic, key, None, value, serialized_value, cluster))
        n_partitions = len(cluster.partitions_for_topic(topic) or ())
        hit = self._cache.get((topic, serialized_key))
        if hit is not None and hit[0] == n_partitions:
            return hit[1]
        chosen = int(
            super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        )
        if len(self._cache) >= _MAX_ENTRIES:
            self._cache.clear()
        self._cache[(topic, serialized_key)] = (n_partitions, chosen)
        return chosen
