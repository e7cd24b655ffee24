"""Read the latest recommendation list of one user from the compacted output topic."""

from __future__ import annotations

import time
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
        found: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout_s
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    if r.key == key:  # a tombstone (the user was forgotten) ends the list
                        found = orjson.loads(r.value) if r.value is not None else None
        if consumer.position(tp) < end:
            raise TimeoutError(
                f"read {topic}[{tp.partition}] only to {consumer.position(tp)} of {end} in {timeout_s} s"
            )
        return found
    finally:
        consumer.close()
