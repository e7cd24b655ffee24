"""The worker's consumer fetches with the configured broker wait, not Faust's 1.5 s."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import aiokafka

from streamrec.settings import load_settings
from streams.app import create_app


def test_the_worker_consumer_waits_on_the_broker_as_configured(tmp_path: Path) -> None:
    async def main() -> int:
        settings = load_settings(env={}).replace(
            app={"fetch_max_wait_ms": 37, "datadir": str(tmp_path)}
        )
        app = create_app(settings)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()  # never started: releases what the constructor made

    assert asyncio.run(main()) == 37
    # aiokafka builds its fetcher at start from that attribute: if it stops doing so, the
    # setting would do nothing, so this says so
    source = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in source


def test_faust_alone_would_wait_one_and_a_half_seconds() -> None:
    """What the mix-in corrects (faust-streaming passes a literal 1,500 ms)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    source = inspect.getsource(AIOKafkaConsumerThread._create_worker_consumer)
    assert "fetch_max_wait_ms=1500" in source
