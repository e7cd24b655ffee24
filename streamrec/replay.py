"""Publish an event log (and optionally an item catalog) to Kafka: the core of `streamrec replay`.

Records follow docs/events.md: items keyed by item id on the catalog topic, then events keyed by
user id on the topic of their type, values as compact JSON. Sending stops at the first delivery
error, which is raised after the producer has been closed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import orjson
from tqdm import tqdm

from streamrec.events.schema import EVENT_TYPES

DEFAULT_EVENT_TOPICS: Mapping[str, str] = MappingProxyType(
    {t: f"streamrec.{t}" for t in EVENT_TYPES}
)
DEFAULT_ITEMS_TOPIC = "streamrec.items"

# Throughput-leaning defaults; anything in producer_config wins. acks=all plus idempotence keeps
# per-user order through retries, and lingering a little lets batches fill.
PRODUCER_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "max_in_flight_requests_per_connection": 5,
    }
)

_MIN_SLEEP_S = 0.002  # shorter sleeps cost more in scheduler overhead than they smooth
_MAX_LAG_S = 1.0  # after a stall, resume the rate instead of bursting to catch up
_PROGRESS_EVERY = 512  # events per progress-bar update; per-event updates cost real time
_CLOSE_TIMEOUT_S = 30.0
_FAILED_CLOSE_TIMEOUT_S = 5.0
_DUMP = orjson.OPT_SERIALIZE_NUMPY  # same bytes as the event-log writer produces


class ProducerLike(Protocol):
    """The part of kafka-python's KafkaProducer that replay uses (lets tests pass a fake)."""

    def send(self, topic: str, value: Any = None, key: Any = None) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


class ReplayError(RuntimeError):
    """A record could not be delivered."""


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    """What a replay delivered; seconds covers everything up to the final flush, catalog included."""

    events_sent: int
    items_sent: int
    per_topic: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events_sent / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "events_sent": self.events_sent,
            "items_sent": self.items_sent,
            "per_topic": dict(self.per_topic),
            "seconds": self.seconds,
            "events_per_s": self.events_per_s,
        }

    def format(self) -> str:
        lines = [
            f"replayed {self.events_sent:,} events and {self.items_sent:,} items "
            f"in {self.seconds:.1f} s ({self.events_per_s:,.0f} events/s)"
        ]
        width = max((len(t) for t in self.per_topic), default=0)
        lines += [f"  {t:<{width}}  {n:>12,}" for t, n in sorted(self.per_topic.items())]
        return "\n".join(lines)


def stamp_for_replay(event: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
    """A copy of event with ts set to now (default: the wall clock), to replay a log as live."""
    return {**event, "ts": round(time.time() if now is None else now, 3)}


def _key(value: Any, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    # Integer ids are legal on the wire and mean their decimal string (docs/events.md).
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    raise ValueError(f"{what} must be a string or an integer to be a key, got {value!r}")


class _Pacer:
    """Holds a fixed rate against a monotonic schedule, so sleep overshoot does not accumulate."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 events/s, got {rate}")
        self._interval = 1.0 / rate
        self._origin = time.monotonic()
        self._n = 0

    def wait(self) -> None:
        due = self._origin + self._n * self._interval
        ahead = due - time.monotonic()
        if ahead > _MIN_SLEEP_S:
            time.sleep(ahead)
        elif ahead < -_MAX_LAG_S:
            self._origin = time.monotonic()
            self._n = 0
        self._n += 1


def _make_producer(config: Mapping[str, Any]) -> ProducerLike:
    from kafka import KafkaProducer  # imported late: only replay needs the client

    producer: ProducerLike = KafkaProducer(**config)
    return producer


def replay(
    events: Iterable[Mapping[str, Any]],
    producer_config: Mapping[str, Any],
    topics: Mapping[str, str] | None = None,
    rate: float | None = None,
    items: Iterable[Mapping[str, Any]] | None = None,
    items_topic: str | None = None,
    progress: bool = True,
    total: int | None = None,
    *,
    retime: bool = False,
    producer_factory: Callable[[Mapping[str, Any]], ProducerLike] | None = None,
) -> ReplaySummary:
    """Send items (if given) then events; return what was sent once everything is acknowledged.

    topics maps event type to topic (default DEFAULT_EVENT_TOPICS); rate is events per second,
    None for as fast as the producer goes (items are never rate-limited); total sizes the
    progress bar (taken from len(events) when it has one). With retime, each event's ts becomes
    its send time. Raises ReplayError on a delivery failure, ValueError on an event without a
    known type or a user_id; the producer is closed in every case.
    """
    topic_of = dict(DEFAULT_EVENT_TOPICS if topics is None else topics)
    # Paced replays stand in for live traffic: send each event at once instead of lingering to
    # fill batches, or the linger shows up as event -> list latency downstream.
    paced = {"linger_ms": 0} if rate else {}
    config = {**PRODUCER_DEFAULTS, **paced, **producer_config}
    for name in ("key_serializer", "value_serializer"):
        if config.get(name) is not None:
            raise ValueError(f"{name} is not supported: replay sends ready-made bytes")
    if total is None and isinstance(events, Sized):
        total = len(events)

    failures: list[BaseException] = []  # appended from the producer's I/O thread

    def check() -> None:
        if failures:
            raise ReplayError(
                f"delivery failed for {len(failures)} record(s); first: {failures[0]!r}"
            ) from failures[0]

    counts: Counter[str] = Counter()
    n_items = n_events = 0
    producer = (producer_factory or _make_producer)(config)
    started = time.monotonic()
    close_timeout = _FAILED_CLOSE_TIMEOUT_S  # until everything is delivered, don't hang on exit
    try:
        if items is not None:
            topic = items_topic or DEFAULT_ITEMS_TOPIC
            for item in items:
                value = orjson.dumps(item if isinstance(item, dict) else dict(item), option=_DUMP)
                producer.send(
                    topic,
                    key=_key(item.get("item_id"), f"item #{n_items + 1}: item_id"),
                    value=value,
                ).add_errback(failures.append)
                n_items += 1
            counts[topic] += n_items
            # Consumers should know an item before the first event that mentions it.
            producer.flush()
            check()

        pacer = _Pacer(rate) if rate is not None else None
        bar = tqdm(
            total=total,
            unit="ev",
            unit_scale=True,
            desc="replay",
            disable=not progress,
            dynamic_ncols=True,
        )
        with bar:
            for n_events, event in enumerate(events, 1):
                event_type = event.get("type")
                event_topic = topic_of.get(event_type) if isinstance(event_type, str) else None
                if event_topic is None:
                    raise ValueError(
                        f"event #{n_events}: type {event_type!r} has no topic "
                        f"(known: {', '.join(topic_of)})"
                    )
                key = _key(event.get("user_id"), f"event #{n_events}: user_id")
                if pacer is not None:
                    pacer.wait()
                if retime:
                    event = stamp_for_replay(event)
                value = orjson.dumps(
                    event if isinstance(event, dict) else dict(event), option=_DUMP
                )
                producer.send(event_topic, key=key, value=value).add_errback(failures.append)
                counts[event_topic] += 1
                if n_events % _PROGRESS_EVERY == 0:
                    bar.update(_PROGRESS_EVERY)
                    check()
            bar.update(n_events % _PROGRESS_EVERY)
            producer.flush()
        check()
        close_timeout = _CLOSE_TIMEOUT_S
    finally:
        producer.close(timeout=close_timeout)
    return ReplaySummary(
        events_sent=n_events,
        items_sent=n_items,
        per_topic=dict(counts),
        seconds=time.monotonic() - started,
    )
