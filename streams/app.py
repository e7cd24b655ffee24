"""The Faust application, built from settings: one place that maps streamrec settings to Faust's."""

from __future__ import annotations

from pathlib import Path

import faust

from streamrec.kafka.security import faust_credentials
from streamrec.settings import Settings
from streams.fetch_wait import BoundedFetchWait
from streams.inline_delivery import InlineDelivery
from streams.seek_first import SeekFirstConsumer


class WorkerConsumer(BoundedFetchWait, InlineDelivery, SeekFirstConsumer):
    """The worker's Faust consumer: stream partitions flow only once sought to their committed
    offsets (``streams.seek_first``), fetched records reach the streams without a task per
    record unless their delivery blocks (``streams.inline_delivery``), and a fetch waits on the
    broker at most ``app.fetch_max_wait_ms`` (``streams.fetch_wait``)."""


def create_app(settings: Settings) -> faust.App:
    brokers = ";".join(
        f"kafka://{s.strip()}" for s in settings.kafka.bootstrap_servers.split(",") if s.strip()
    )
    a = settings.app
    Path(a.datadir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        a.id,
        broker=brokers,
        broker_credentials=faust_credentials(settings.kafka),
        store=a.store,
        datadir=a.datadir,
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        # The project creates its topics itself (`streamrec topics create`); Faust declares only
        # its own changelogs.
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=a.commit_interval_s,
        broker_session_timeout=a.session_timeout_s,
        broker_heartbeat_interval=max(0.5, a.session_timeout_s / 10),
        table_standby_replicas=0,
        web_enabled=a.web_enabled,
        web_bind=a.web_host,
        web_port=a.web_port,
        web_host=a.web_host,
        producer_acks=-1,
        # The model batcher may hold the event loop for a batch; keep stall warnings meaningful.
        stream_wait_empty=True,
        autodiscover=False,
    )

    class Consumer(WorkerConsumer):
        fetch_max_wait_ms = a.fetch_max_wait_ms

    app.transport.Consumer = Consumer  # type: ignore[misc]  # this app's transport only
    return app
