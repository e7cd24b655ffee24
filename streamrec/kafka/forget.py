"""Ask the workers to forget users: one request per user on the forget topic, keyed by user id.

The key sends the request to the partition of the user's events, so the worker that holds the
user's state reads it, in order with their events (streams/worker.py ``Worker.forget``). The
value says only when it was asked; the request is the whole of what is kept, and it ages out
with the topic's retention (topics.events_retention_ms).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import orjson
from kafka import KafkaProducer

from streamrec.settings import Settings


def request_forget(settings: Settings, user_ids: Iterable[str]) -> int:
    """Send a forget request for each user; returns how many were acknowledged by the broker."""
    users = [u for u in user_ids]
    for u in users:
        if not u.strip():
            raise ValueError("a user id to forget must not be empty")
    producer = KafkaProducer(**settings.kafka_client_config(), acks="all")
    try:
        futures = [
            producer.send(
                settings.topics.forget,
                key=u.encode(),
                value=orjson.dumps({"requested_at": time.time()}),
            )
            for u in users
        ]
        producer.flush()
        for f in futures:
            f.get(timeout=30)  # raises when the broker refused it
    finally:
        producer.close()
    return len(users)
