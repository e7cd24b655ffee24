"""Read the latest recommendation list of one user from the compacted output topic."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from streamrec.settings import Settings


def partition_for(key: bytes, n_partitions: int) -> int:
    """The partition Kafka's default partitioner (Java, kafka-python, aiokafka) picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % n_partitions


def latest_list(settings: Settings, user_id: str, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """Scan the user's partition of the output topic; None when no list was ever published."""
    lists = recent_lists(settings, user_id, 1, timeout_s)
    return lists[-1] if lists else None


def recent_lists(
    settings: Settings, user_id: str, n: int, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """The user's last ``n`` lists still on the output topic, oldest first (compaction keeps the
    latest only, so fewer may be left); a tombstone (the user was forgotten) clears them."""
    topic = settings.topics.recommendations
    key = user_id.encode()
    consumer = KafkaConsumer(
        **settings.kafka_client_config(),
        group_id=None,
        enable_auto_commit=False,
        client_id="streamrec-recs",
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"topic {topic} does not exist")
        tp = TopicPartition(topic, partition_for(key, len(partitions)))
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        found: deque[dict[str, Any]] = deque(maxlen=max(1, n))
        deadline = time.monotonic() + timeout_s
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    if r.key != key:
                        continue
                    if r.value is None:
                        found.clear()
                    else:
                        found.append(orjson.loads(r.value))
        if consumer.position(tp) < end:
            raise TimeoutError(
                f"read {topic}[{tp.partition}] only to {consumer.position(tp)} of {end} in {timeout_s} s"
            )
        return list(found)
    finally:
        consumer.close()
