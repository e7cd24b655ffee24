"""Bound how long the broker may hold a fetch, so a long micro-batch does not stall the next one.

faust-streaming 0.15.3 builds its aiokafka consumer with ``fetch_max_wait_ms=1500``. aiokafka
keeps one fetch in flight per broker, and leaves out of it every partition whose fetched records
the application has not taken yet; once such records are older than its prefetch backoff
(100 ms) it stops waiting for them and sends a fetch for the *other* partitions. On a worker
whose event loop ranks a batch for a few hundred milliseconds, the records of the busy
partitions sit untaken that long, so the fetch goes out for the idle ones (the forget and items
topics, a quiet purchase partition). The broker holds it until data arrives or the wait runs
out, and meanwhile nothing else is fetched from that broker: the worker read nothing for up to
1.5 s after a long batch, then two seconds' worth at once (docs/benchmarks.md, *Live path*,
2026-12-08, second session). A short wait bounds that stall; an idle consumer polls a little
more often.
"""

from __future__ import annotations

from typing import Any, cast

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread


class _BoundedWaitThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # read by aiokafka when it builds its fetcher, at start (the constructor takes it, but
        # Faust passes a literal)
        consumer._fetch_max_wait_ms = cast(BoundedFetchWait, self.consumer).fetch_max_wait_ms
        return consumer


class BoundedFetchWait:
    """Consumer mix-in: the worker consumer's fetches wait at most ``fetch_max_wait_ms``
    (the class attribute, set from ``app.fetch_max_wait_ms``) on the broker."""

    fetch_max_wait_ms = 1500

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        loop, beacon = self.loop, self.beacon  # type: ignore[attr-defined]
        return _BoundedWaitThread(self, loop=loop, beacon=beacon)  # type: ignore[arg-type]
