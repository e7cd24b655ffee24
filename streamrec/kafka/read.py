"""Read a topic from its beginning up to its end as of the call: what tools (evaluation, fault
checks) need to see everything a run has written, without a consumer group."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord

from streamrec.kafka.groups import topic_partitions

Record = tuple[bytes | None, bytes | None]  # (key, value)


def read_to_end(
    client_config: Mapping[str, Any], topic: str, timeout_s: float | None = None
) -> list[Record]:
    """Every (key, value) of ``topic`` up to its current end, partition by partition in offset
    order (a key's records are all in one partition, so their order is the order written).
    Raises TimeoutError past ``timeout_s`` (None: no limit)."""
    return [(r.key, r.value) for r in read_records(client_config, topic, timeout_s)]


def read_records(
    client_config: Mapping[str, Any], topic: str, timeout_s: float | None = None
) -> list[ConsumerRecord]:
    """As :func:`read_to_end`, whole records (headers, offsets, timestamps)."""
    consumer = KafkaConsumer(
        **client_config,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        tps = topic_partitions(consumer, [topic])
        if not tps:
            return []
        end = consumer.end_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[ConsumerRecord] = []
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within {timeout_s:g} s")
            for records in consumer.poll(timeout_ms=500, max_records=50_000).values():
                out.extend(records)
        return out
    finally:
        consumer.close()
