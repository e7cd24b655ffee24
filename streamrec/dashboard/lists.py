"""The lists of the users someone is inspecting, followed live on the output topic.

A consumer without a group reads every partition of the recommendations topic from its end and
keeps the newest two lists of each watched user (a bounded set: the least recently inspected
drops out). A user's lists from before they were first watched come from one scan of their
partition (``streamrec.kafka.lookup.recent_lists``), merged with what the follower caught since.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from streamrec.kafka.lookup import recent_lists
from streamrec.settings import Settings

log = logging.getLogger(__name__)

MAX_WATCHED = 64
RECENT_USERS = 12  # users whose lists went out last, offered on the page to click
Lists = tuple[dict[str, Any] | None, dict[str, Any] | None]  # (previous, current)


def _newest_two(lists: list[dict[str, Any]]) -> Lists:
    seen, unique = set(), []
    for rec in sorted(lists, key=lambda r: (r.get("emitted_at", 0.0), r.get("event_ts", 0.0))):
        ident = (rec.get("event_id"), rec.get("emitted_at"))
        if ident not in seen:
            seen.add(ident)
            unique.append(rec)
    if not unique:
        return None, None
    return (unique[-2] if len(unique) > 1 else None), unique[-1]


class ListFollower(threading.Thread):
    def __init__(self, settings: Settings, max_watched: int = MAX_WATCHED) -> None:
        super().__init__(daemon=True, name="list-follower")
        self.settings = settings
        self.max_watched = max_watched
        self._lock = threading.Lock()
        self._watched: OrderedDict[bytes, list[dict[str, Any]]] = OrderedDict()
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._stopping = threading.Event()
        self.ready = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        topic = self.settings.topics.recommendations
        try:
            consumer = KafkaConsumer(
                **self.settings.kafka_client_config(),
                group_id=None,
                enable_auto_commit=False,
                client_id="streamrec-dashboard-lists",
            )
        except Exception as exc:  # the broker is down: the inspector says so, the page stays up
            self.error = f"cannot read {topic}: {exc}"
            log.warning(self.error)
            return
        try:
            while not self._stopping.is_set():
                partitions = consumer.partitions_for_topic(topic)
                if partitions:
                    break
                self._stopping.wait(1.0)
            else:
                return
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            consumer.seek_to_end(*tps)
            for tp in tps:
                consumer.position(tp)  # resolve "end" now, before the scans it is merged with
            self.ready.set()
            while not self._stopping.is_set():
                for records in consumer.poll(timeout_ms=200).values():
                    for r in records:
                        self._take(r.key, r.value)
        except Exception as exc:
            self.error = f"stopped reading {topic}: {exc}"
            log.exception("list follower stopped")
        finally:
            consumer.close()

    def _take(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        with self._lock:
            if value is not None:
                self._recent[key] = None
                self._recent.move_to_end(key)
                if len(self._recent) > RECENT_USERS:
                    self._recent.popitem(last=False)
            else:
                self._recent.pop(key, None)
            held = self._watched.get(key)
            if held is None:
                return
            if value is None:  # the user was forgotten
                held.clear()
            else:
                held.append(orjson.loads(value))
                del held[:-2]

    def lists(self, user_id: str, timeout_s: float = 10.0) -> Lists:
        """The user's previous and current list (blocking: the first call scans their
        partition)."""
        key = user_id.encode()
        with self._lock:
            held = self._watched.get(key)
            if held is not None:
                self._watched.move_to_end(key)
                return _newest_two(list(held))
            self._watched[key] = []
            while len(self._watched) > self.max_watched:
                self._watched.popitem(last=False)
        self.ready.wait(timeout_s)
        scanned = recent_lists(self.settings, user_id, 2, timeout_s)
        with self._lock:
            held = self._watched.setdefault(key, [])
            held[:] = [r for r in _newest_two(scanned + held) if r is not None]
            return _newest_two(list(held))

    def recent_users(self) -> list[str]:
        """Newest first."""
        with self._lock:
            keys = list(self._recent)
        return [k.decode(errors="replace") for k in reversed(keys)]

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)
