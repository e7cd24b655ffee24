"""Publish an event log (and optionally an item catalog) to Kafka: the core of `streamrec replay`.

Records follow docs/events.md: items keyed by item id on the catalog topic, then events keyed by
user id on the topic of their type, values as compact JSON. Sending stops at the first delivery
error, which is raised after the producer has been closed.

Pacing is flat out, a fixed rate, or the source's own timestamps sped up by a time scale. With a
state file a replay is resumable: every ``checkpoint_every`` events (once the producer has
flushed them) and at the end it records how many events of the sequence were delivered, and a
rerun over the same sequence skips that prefix.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import orjson
from tqdm import tqdm

from streamrec.atomic import write_atomic
from streamrec.events.schema import EVENT_TYPES

log = logging.getLogger(__name__)

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
_MAX_LAG_S = 1.0  # after a stall, resume the pace instead of bursting to catch up
# Each checkpoint drains the producer's pipeline (a flush), so it costs a round trip; at the
# target rate this is one every couple of seconds.
CHECKPOINT_EVERY = 100_000
_STATE_VERSION = 1
_PROGRESS_EVERY = 512  # events per progress-bar update; per-event updates cost real time
_CLOSE_TIMEOUT_S = 30.0
_FAILED_CLOSE_TIMEOUT_S = 5.0
_DUMP = orjson.OPT_SERIALIZE_NUMPY  # same bytes as the event-log writer produces


class ProducerLike(Protocol):
    """The part of kafka-python's KafkaProducer that replay uses (lets tests pass a fake)."""

    def send(self, topic: str, value: Any = None, key: Any = None) -> Any: ...

    def partitions_for(self, topic: str) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


class ReplayError(RuntimeError):
    """A record could not be delivered."""


class ReplayStateError(ValueError):
    """A state file that does not describe a prefix of the sequence being replayed."""


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    """What a replay delivered; seconds covers everything up to the final flush, catalog included.
    skipped counts the events a resumed replay passed over: an earlier run delivered them."""

    events_sent: int
    items_sent: int
    per_topic: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: int = 0

    @property
    def events_per_s(self) -> float:
        return self.events_sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def delivered(self) -> int:
        """Events of the sequence delivered so far, by this run and the runs it resumed."""
        return self.skipped + self.events_sent

    def to_dict(self) -> dict[str, Any]:
        return {
            "events_sent": self.events_sent,
            "items_sent": self.items_sent,
            "per_topic": dict(self.per_topic),
            "seconds": self.seconds,
            "events_per_s": self.events_per_s,
            "skipped": self.skipped,
            "delivered": self.delivered,
        }

    def format(self) -> str:
        lines = [
            f"replayed {self.events_sent:,} events and {self.items_sent:,} items "
            f"in {self.seconds:.1f} s ({self.events_per_s:,.0f} events/s)"
        ]
        if self.skipped:
            lines.append(
                f"resumed: skipped the first {self.skipped:,} events (delivered earlier); "
                f"{self.delivered:,} delivered in all"
            )
        width = max((len(t) for t in self.per_topic), default=0)
        lines += [f"  {t:<{width}}  {n:>12,}" for t, n in sorted(self.per_topic.items())]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ReplayState:
    """How far a replay got: the first ``delivered`` events of its sequence are acknowledged, the
    last of them with ``last_event_id`` (checked on resume, so a changed source is noticed)."""

    delivered: int
    last_event_id: Any = None


def load_state(path: str | os.PathLike[str]) -> ReplayState | None:
    """The state recorded at path, or None when there is no file yet."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        obj = orjson.loads(raw)
        if obj.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported version {obj.get('version')!r}")
        delivered = obj["delivered"]
        if not isinstance(delivered, int) or delivered < 0:
            raise ValueError(f"delivered must be a count, got {delivered!r}")
    except (orjson.JSONDecodeError, AttributeError, KeyError, ValueError) as e:
        raise ReplayStateError(f"{os.fspath(path)}: not a replay state file ({e})") from None
    return ReplayState(delivered, obj.get("last_event_id"))


def save_state(path: str | os.PathLike[str], state: ReplayState) -> None:
    """Write state to path atomically: a crash leaves the previous state, never half a file."""
    target = Path(path)
    data = orjson.dumps(
        {
            "version": _STATE_VERSION,
            "delivered": state.delivered,
            "last_event_id": state.last_event_id,
        }
    )
    write_atomic(target, data)


def skip_delivered(
    events: Iterable[Mapping[str, Any]], state: ReplayState
) -> Iterator[Mapping[str, Any]]:
    """The events after the prefix state says was delivered. Raises ReplayStateError when the
    sequence is shorter than that prefix or its last event has another id."""
    it = iter(events)
    # Runs the prefix through at C speed, keeping only the last (count, event).
    tail = deque(enumerate(itertools.islice(it, state.delivered), 1), maxlen=1)
    n, last = tail[0] if tail else (0, None)
    if n < state.delivered:
        raise ReplayStateError(
            f"the state says {state.delivered:,} events were delivered, "
            f"but the source has only {n:,}: is it the same source, order and limit?"
        )
    expected = state.last_event_id
    if last is not None and expected is not None and last.get("event_id") != expected:
        raise ReplayStateError(
            f"event #{n:,} has id {last.get('event_id')!r}, the state expects "
            f"{expected!r}: is it the same source and order?"
        )
    return it


def fetch_topic_metadata(producer: ProducerLike, topics: Iterable[str]) -> None:
    """Fetch each event topic's metadata before a paced replay's clock starts. kafka-python's
    first send to a topic blocks on a metadata refresh (~100 ms each here) after the event was
    stamped: the first event of each topic would show it as event -> list latency downstream,
    and the pacer would then burst to catch up. A topic that does not exist fails its sends
    later as before (this waits up to the producer's ``max_block_ms`` for it)."""
    for topic in dict.fromkeys(topics):
        try:
            producer.partitions_for(topic)
        except Exception as exc:  # kafka-python's KafkaTimeoutError, or the broker's refusal
            log.warning("replay: no metadata for topic %s: %r", topic, exc)


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


class Pacer:
    """When to send each event: at a fixed rate (events/s), or at its source time ``ts`` divided
    by ``time_scale`` (3600: an hour of source time per second), counted from the first event.

    The schedule is absolute, so sleep overshoot does not accumulate and a short sleep can be
    skipped. Falling more than max_lag_s behind (a stall, or a step back in source time, as
    between users of a file in user order) restarts the schedule at the current event instead
    of bursting to catch up. A pure function of the times it is given, so it is testable.
    """

    def __init__(
        self,
        rate: float | None = None,
        time_scale: float | None = None,
        max_lag_s: float = _MAX_LAG_S,
    ) -> None:
        if (rate is None) == (time_scale is None):
            raise ValueError("give exactly one of rate and time_scale")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 events/s, got {rate}")
        if time_scale is not None and time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self._interval = 1.0 / rate if rate is not None else 0.0
        self._scale = time_scale
        self._max_lag_s = max_lag_s
        self._origin: float | None = None  # clock time of the schedule's start
        self._ts0 = 0.0  # source time at the schedule's start
        self._n = 0  # events scheduled since the start

    def delay(self, now: float, ts: float = 0.0) -> float:
        """Seconds to wait, from clock time now, before sending the next event (source time ts)."""
        if self._origin is None:
            self._origin, self._ts0 = now, ts
        if self._scale is None:
            due = self._origin + self._n * self._interval
        else:
            due = self._origin + (ts - self._ts0) / self._scale
        self._n += 1
        ahead = due - now
        if ahead < -self._max_lag_s:
            self._origin, self._ts0, self._n = now, ts, 1
            return 0.0
        return max(ahead, 0.0)


def _make_producer(config: Mapping[str, Any]) -> ProducerLike:
    # imported late: only replay needs the client
    from kafka import KafkaProducer

    from streamrec.kafka.partitioner import CachedKeyPartitioner

    producer: ProducerLike = KafkaProducer(**{"partitioner": CachedKeyPartitioner(), **config})
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
    time_scale: float | None = None,
    state_path: str | os.PathLike[str] | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> ReplaySummary:
    """Send items (if given) then events; return what was sent once everything is acknowledged.

    topics maps event type to topic (default DEFAULT_EVENT_TOPICS). Pacing: rate is events per
    second; time_scale sends events at their original ``ts`` sped up by that factor (see Pacer);
    neither means as fast as the producer goes (items are never paced). total sizes the progress
    bar (taken from len(events) when it has one). With retime, each event's ts becomes its send
    time (pacing still follows the original ts).

    With state_path, the number of events delivered (and the last one's id) is written there
    atomically every checkpoint_every events, after a flush, and at the end; if the file exists,
    that many events are skipped first (ReplayStateError when they do not match). events must
    then be the same deterministic sequence on every run.

    Raises ReplayError on a delivery failure, ValueError on an event without a known type or a
    user_id; the producer is closed in every case.
    """
    if rate is not None and time_scale is not None:
        raise ValueError("give a rate or a time_scale, not both")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    topic_of = dict(DEFAULT_EVENT_TOPICS if topics is None else topics)
    pacer = Pacer(rate, time_scale) if rate is not None or time_scale is not None else None
    # Paced replays stand in for live traffic: send each event at once instead of lingering to
    # fill batches, or the linger shows up as event -> list latency downstream.
    paced = {"linger_ms": 0} if pacer else {}
    config = {**PRODUCER_DEFAULTS, **paced, **producer_config}
    for name in ("key_serializer", "value_serializer"):
        if config.get(name) is not None:
            raise ValueError(f"{name} is not supported: replay sends ready-made bytes")
    if total is None and isinstance(events, Sized):
        total = len(events)

    skipped = 0
    if state_path is not None:
        state = load_state(state_path)
        if state is not None and state.delivered:
            # Before the producer exists: a mismatched state file fails without side effects.
            events = skip_delivered(events, state)
            skipped = state.delivered

    failures: list[BaseException] = []  # appended from the producer's I/O thread

    def check() -> None:
        if failures:
            raise ReplayError(
                f"delivery failed for {len(failures)} record(s); first: {failures[0]!r}"
            ) from failures[0]

    def checkpoint(n_sent: int, last: Mapping[str, Any] | None) -> None:
        if state_path is not None and last is not None:
            save_state(state_path, ReplayState(skipped + n_sent, last.get("event_id")))

    counts: Counter[str] = Counter()
    n_items = n_sent = 0
    last: Mapping[str, Any] | None = None  # the newest event handed to the producer
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

        if pacer is not None:
            fetch_topic_metadata(producer, topic_of.values())

        bar = tqdm(
            total=total,
            initial=skipped,
            unit="ev",
            unit_scale=True,
            desc="replay",
            disable=not progress,
            dynamic_ncols=True,
        )
        next_checkpoint = checkpoint_every
        # Locals: attribute look-ups per event add up at tens of thousands of events a second.
        sleep, clock, dumps, errback = time.sleep, time.monotonic, orjson.dumps, failures.append
        with bar:
            try:
                for event in events:
                    event_type = event.get("type")
                    event_topic = topic_of.get(event_type) if isinstance(event_type, str) else None
                    if event_topic is None:
                        raise ValueError(
                            f"event #{skipped + n_sent + 1}: type {event_type!r} has no topic "
                            f"(known: {', '.join(topic_of)})"
                        )
                    user = event.get("user_id")
                    # The common case inline: building _key's error text per event costs real time.
                    key = (
                        user.encode()
                        if type(user) is str
                        else _key(user, f"event #{skipped + n_sent + 1}: user_id")
                    )
                    if pacer is not None:
                        wait = pacer.delay(clock(), _ts(event, time_scale, skipped + n_sent + 1))
                        if wait > _MIN_SLEEP_S:
                            sleep(wait)
                    if retime:
                        event = stamp_for_replay(event)
                    value = dumps(event if type(event) is dict else dict(event), option=_DUMP)
                    producer.send(event_topic, key=key, value=value).add_errback(errback)
                    # Counted once handed over, so an interrupt never records an unsent event.
                    n_sent += 1
                    last = event
                    counts[event_topic] += 1
                    if n_sent % _PROGRESS_EVERY == 0:
                        bar.update(_PROGRESS_EVERY)
                        check()
                    if n_sent == next_checkpoint:
                        producer.flush()
                        check()
                        checkpoint(n_sent, last)
                        next_checkpoint += checkpoint_every
            except KeyboardInterrupt:
                _save_on_interrupt(producer, failures, lambda: checkpoint(n_sent, last))
                raise
            bar.update(n_sent % _PROGRESS_EVERY)
            if total is not None:
                bar.total = bar.n  # total may have been an estimate; the bar should end full
            producer.flush()
            check()
            checkpoint(n_sent, last)
        close_timeout = _CLOSE_TIMEOUT_S
    finally:
        producer.close(timeout=close_timeout)
    return ReplaySummary(
        events_sent=n_sent,
        items_sent=n_items,
        per_topic=dict(counts),
        seconds=time.monotonic() - started,
        skipped=skipped,
    )


def _ts(event: Mapping[str, Any], time_scale: float | None, n: int) -> float:
    if time_scale is None:
        return 0.0  # a fixed rate does not look at event time
    ts = event.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise ValueError(f"event #{n}: pacing by time scale needs a numeric ts, got {ts!r}")
    return float(ts)


def _save_on_interrupt(
    producer: ProducerLike, failures: list[BaseException], save: Callable[[], None]
) -> None:
    """On Ctrl-C, deliver what was handed over and record it, so a rerun resumes exactly here."""
    try:
        producer.flush(timeout=_FAILED_CLOSE_TIMEOUT_S)
    except Exception as e:  # a timeout or a dead connection: the last checkpoint stands
        log.warning(
            "replay interrupted; could not flush (%s), the state stays at the last checkpoint", e
        )
        return
    if failures:
        log.warning(
            "replay interrupted after delivery failures; the state stays at the last checkpoint"
        )
        return
    save()
