"""Topic declarations and creation. Values stay raw bytes so bad input reaches the DLQ intact."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust
from kafka import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError

from streamrec.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    # The three event topics and the forget requests, one stream: one agent reads them, so a
    # user's partition of every one of them is assigned to the same worker (co-partitioned).
    events: faust.TopicT
    type_of: dict[str, str]  # topic name -> event type
    forget: str  # the forget requests' topic name
    forget_requests: faust.TopicT  # the same topic, to send on (the retention sweep)
    recommendations: faust.TopicT
    dlq: faust.TopicT


USERS_TABLE = "users"


def declare(app: faust.App, settings: Settings) -> Topics:
    t = settings.topics
    by_type = t.event_topics()
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    # Faust creates any declared topic that is missing; give it the same partitions and configs
    # as `streamrec topics create`, so an output topic is compacted however it came to exist.
    specs = topic_specs(settings)

    def topic(*names: str) -> faust.TopicT:
        spec = specs[names[0]]
        return app.topic(*names, partitions=spec["partitions"], config=spec["configs"], **raw)

    return Topics(
        events=topic(*by_type.values(), t.forget),
        type_of={name: etype for etype, name in by_type.items()},
        forget=t.forget,
        forget_requests=topic(t.forget),
        recommendations=topic(t.recommendations),
        dlq=topic(t.dlq),
    )


def topic_specs(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every topic streamrec reads or writes, with partitions and configs."""
    t = settings.topics
    events_cfg = {"retention.ms": str(t.events_retention_ms)}
    compact = {"cleanup.policy": "compact"}
    specs = {
        name: {"partitions": t.partitions, "configs": events_cfg}
        for name in t.event_topics().values()
    }
    # keyed by user like the events, with as many partitions: a request lands on the partition
    # of the user's events, so on the worker holding their state
    specs[t.forget] = {"partitions": t.partitions, "configs": events_cfg}
    specs[t.items] = {"partitions": 1, "configs": compact}
    specs[t.recommendations] = {"partitions": t.partitions, "configs": compact}
    specs[t.dlq] = {"partitions": 1, "configs": {"retention.ms": str(30 * 86400 * 1000)}}
    # The users table's changelog, as Faust would declare it. Created up front: when Faust creates
    # it at start-up, its consumer's metadata may list it with 0 partitions for minutes, and every
    # table write meanwhile fails Faust's partition check (a worker started on a backlog would
    # dead-letter all of it).
    specs[changelog_topic(settings)] = {"partitions": t.partitions, "configs": compact}
    return specs


def changelog_topic(settings: Settings) -> str:
    """Faust's name for the users table's changelog (``<app id>-users-changelog``)."""
    return f"{settings.app.id}-{USERS_TABLE}-changelog"


def create_topics(settings: Settings, admin: KafkaAdminClient | None = None) -> dict[str, str]:
    """Create missing topics; returns {topic: "created" | "exists"}. Never changes existing ones."""
    own = admin is None
    admin = admin or KafkaAdminClient(**settings.kafka_client_config(), client_id="streamrec-admin")
    try:
        existing = set(admin.list_topics())
        result: dict[str, str] = {}
        for name, spec in topic_specs(settings).items():
            if name in existing:
                result[name] = "exists"
                continue
            try:
                admin.create_topics(
                    {
                        name: {
                            "num_partitions": spec["partitions"],
                            "replication_factor": settings.topics.replication_factor,
                            "configs": spec["configs"],
                        }
                    }
                )
                result[name] = "created"
            except TopicAlreadyExistsError:
                result[name] = "exists"
        return result
    finally:
        if own:
            admin.close()
