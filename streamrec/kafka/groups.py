"""How far a worker app (a consumer group: group id = app id) has got through its input topics.

Used to decide that a backfill has caught up, that a live app has passed a given point, and
that an evaluation replay has been fully processed. Offsets count only once committed, and a
worker commits an event's offset only after its list was handed to the producer and flushed
(streams/worker.py), so "committed >= end" means every list up to there is on the output topic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from streamrec.wait import wait_until

Offsets = dict[TopicPartition, int]


@dataclass(frozen=True)
class Progress:
    """Per partition of the input topics: the group's committed offset and the end offset."""

    committed: Offsets
    end: Offsets

    @property
    def lag(self) -> int:
        return sum(max(0, e - self.committed.get(tp, 0)) for tp, e in self.end.items())

    def reached(self, target: Mapping[TopicPartition, int]) -> bool:
        """Whether every partition's committed offset is at or past ``target``'s."""
        return all(self.committed.get(tp, 0) >= off for tp, off in target.items())


def topic_partitions(consumer: KafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of ``topics`` (a topic that does not exist has none)."""
    out: list[TopicPartition] = []
    for topic in topics:
        out += [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
    return out


def end_offsets(client_config: Mapping[str, Any], topics: Iterable[str]) -> Offsets:
    consumer = KafkaConsumer(**client_config, group_id=None, enable_auto_commit=False)
    try:
        tps = topic_partitions(consumer, topics)
        return dict(consumer.end_offsets(tps)) if tps else {}
    finally:
        consumer.close()


def committed_offsets(
    client_config: Mapping[str, Any], group: str, topics: Iterable[str]
) -> Offsets:
    """The group's committed offsets on ``topics`` (partitions without a commit are absent)."""
    wanted = set(topics)
    admin = KafkaAdminClient(**client_config, client_id="streamrec-groups")
    try:
        found = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {
        tp: meta.offset for tp, meta in found.items() if tp.topic in wanted and meta.offset >= 0
    }


def progress(client_config: Mapping[str, Any], group: str, topics: Iterable[str]) -> Progress:
    topics = list(topics)
    # Committed first: an end read after it can only be later, so "reached" is never premature.
    committed = committed_offsets(client_config, group, topics)
    return Progress(committed, end_offsets(client_config, topics))


def wait_for(
    client_config: Mapping[str, Any],
    group: str,
    topics: Iterable[str],
    target: Mapping[TopicPartition, int] | None = None,
    max_lag: int = 0,
    timeout_s: float = 600.0,
    poll_s: float = 1.0,
    on_poll: Callable[[Progress], None] | None = None,
    alive: Callable[[], bool] | None = None,
) -> Progress:
    """Block until ``group`` has committed up to ``target`` (default: within ``max_lag`` events
    of the end offsets at each poll). Raises TimeoutError, or RuntimeError when ``alive`` says the
    worker died."""
    topics = list(topics)
    last: list[Progress] = []

    def probe() -> Progress | None:
        now = progress(client_config, group, topics)
        last[:] = [now]
        if on_poll is not None:
            on_poll(now)
        if now.reached(target) if target is not None else now.lag <= max_lag:
            return now
        if alive is not None and not alive():
            raise RuntimeError(f"the worker of {group!r} exited before catching up")
        return None

    return wait_until(
        probe,
        timeout_s=timeout_s,
        what=f"{group!r} caught up",
        poll_s=poll_s,
        on_timeout=lambda: TimeoutError(
            f"{group!r} still {last[-1].lag:,} events behind after {timeout_s} s"
        ),
    )
