"""Every worker keeps the WHOLE catalog: it reads all partitions of the compacted items topic from
the beginning (like a Kafka Streams GlobalKTable) with a group-less consumer, and follows it.

The topic is the source of truth, so no local copy is persisted. ``ready`` is set once the worker
has read up to the end offsets seen at start, so lists are never ranked against half a catalog.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamrec.events.schema import Item
from streamrec.events.validate import Limits, Rejection, parse_item
from streamrec.kafka.security import aiokafka_config
from streamrec.settings import Settings

log = logging.getLogger(__name__)
# Item records per read: each read's item-tower pass runs on the event loop, ~11 ms per 1,000
# items at d=64 on these CPUs (41 ms for 5,000, which stalled event handling that long).
CATALOG_BATCH = 1000

OnItems = Callable[[list[Item], list[str]], None]  # (upserts, deletions)
OnReject = Callable[[str, int, int, bytes | None, bytes | None, Rejection], Awaitable[None]]


class CatalogFollower:
    def __init__(self, settings: Settings, on_items: OnItems, on_reject: OnReject) -> None:
        self.settings = settings
        self.topic = settings.topics.items
        self.on_items = on_items
        self.on_reject = on_reject
        self.ready = asyncio.Event()
        self.items_read = 0
        self.limits = Limits.from_settings(settings.validation, items=True)

    async def run(self) -> None:
        # Without a group id, a subscription is assigned every partition of the topic (and picks
        # up partitions added later); with no committed offsets it starts from the beginning.
        consumer = AIOKafkaConsumer(
            self.topic,
            **aiokafka_config(self.settings.kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self.settings.app.id}-catalog",
            metadata_max_age_ms=5000,
        )
        await consumer.start()
        try:
            end: dict[TopicPartition, int] | None = None
            while True:
                if end is None:
                    assigned = consumer.assignment()
                    if assigned:
                        end = await consumer.end_offsets(list(assigned))
                    elif not self.items_read:
                        log.debug("waiting for the items topic %s", self.topic)
                batches = await consumer.getmany(timeout_ms=500, max_records=CATALOG_BATCH)
                for tp, records in batches.items():
                    upserts: list[Item] = []
                    for r in records:
                        if r.value is None:  # tombstone; keep log order against earlier upserts
                            if r.key:
                                self.on_items(upserts, [r.key.decode("utf-8", "replace")])
                                upserts = []
                            continue
                        item = parse_item(r.value, r.key, self.limits)
                        if isinstance(item, Rejection):
                            await self.on_reject(
                                tp.topic, tp.partition, r.offset, r.key, r.value, item
                            )
                        else:
                            upserts.append(item)
                    self.items_read += len(records)
                    self.on_items(upserts, [])
                if end is not None and not self.ready.is_set():
                    positions = {tp: await consumer.position(tp) for tp in end}
                    if all(positions[tp] >= offset for tp, offset in end.items()):
                        self._set_ready()
        finally:
            await consumer.stop()

    def _set_ready(self) -> None:
        if not self.ready.is_set():
            log.info("catalog loaded: %d records from %s", self.items_read, self.topic)
            self.ready.set()
