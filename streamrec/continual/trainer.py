"""`streamrec trainer`: the Kafka side of continual training.

It reads every partition of the three event topics (no consumer group: it needs every user,
whatever the workers' partitioning) from ``trainer.window_s`` back, and the items topic from its
start (compacted: the catalog) and the forget topic (a forgotten user's events produced up to
the request are dropped, whichever topic is read first; later ones start a new history, as on
the workers), into a bounded ``TrainingWindow``; every ``trainer.interval_s``
with at least ``trainer.min_events`` new events it runs a cycle (fine-tune, gate, publish to
model.checkpoint, where the workers' poll picks the new version up between batches).

Its window lives in memory and is rebuilt from the retained logs on a restart, so it commits
no offsets. Events are cleaned by the workers' own validation; a rejected one is counted and
skipped (the workers dead-letter it with the reason; the trainer only reads).

A cycle that raises is the trainer's own fault, not bad input: /health turns 503 with the error
and it is logged with its traceback; the next interval tries again and serving is untouched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streamrec.continual.cycle import CycleResult, run_cycle, serving_model
from streamrec.continual.window import TrainingWindow
from streamrec.events.schema import EVENT_TYPE_CODE
from streamrec.events.validate import (
    Limits,
    Rejection,
    parse_event,
    parse_forget_request,
    parse_item,
)
from streamrec.settings import Settings

log = logging.getLogger(__name__)


class TrainerMetrics:
    """Prometheus series of one trainer (names prefixed streamrec_trainer_)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=False)
        p = "streamrec_trainer"
        self.events = Counter(f"{p}_events", "event records read", ["outcome"], registry=r)
        self.items = Counter(f"{p}_items", "catalog records read", registry=r)
        self.forgotten = Counter(f"{p}_users_forgotten", "forget requests applied", registry=r)
        self.cycles = Counter(f"{p}_cycles", "training cycles by outcome", ["outcome"], registry=r)
        self.window_events = Gauge(f"{p}_window_events", "events in the window", registry=r)
        self.window_users = Gauge(f"{p}_window_users", "users in the window", registry=r)
        self.window_from = Gauge(f"{p}_window_from_ts", "oldest event time trained on", registry=r)
        self.window_cut = Gauge(f"{p}_window_cut_ts", "last cycle's holdout cut", registry=r)
        self.last_publish = Gauge(f"{p}_last_publish_timestamp", "unix time", registry=r)
        self.last_cycle_s = Gauge(f"{p}_last_cycle_seconds", "duration", registry=r)
        self.gate = Gauge(
            f"{p}_gate_ndcg10", "held-out NDCG@10 at the last gate", ["model"], registry=r
        )


class Trainer:
    def __init__(self, settings: Settings, staging: Path | None = None) -> None:
        self.settings = settings
        t = settings.trainer
        self.window = TrainingWindow(t.window_s, t.window_users, t.window_user_events)
        self.items: dict[str, dict[str, Any]] = {}
        self.metrics = TrainerMetrics()
        self.limits = Limits.from_settings(settings.validation)
        self.item_limits = Limits.from_settings(settings.validation, items=True)
        self._staging = staging
        self.cycles = 0
        self.last: CycleResult | None = None
        self.error = ""
        self.since_cycle = 0
        self.caught_up = False

    # -- input ------------------------------------------------------------------------------------

    def on_event(
        self, etype: str, key: bytes | None, value: bytes | None, produced_at: float
    ) -> None:
        """One event record; ``produced_at``: its record time (s), against forget requests."""
        ev = parse_event(value, etype, key, self.limits)
        if isinstance(ev, Rejection):
            self.metrics.events.labels("rejected").inc()
            return
        added = self.window.add(
            ev.user_id, ev.event_id, ev.item_id, EVENT_TYPE_CODE[etype], ev.ts, produced_at
        )
        self.metrics.events.labels("kept" if added else "dropped").inc()
        self.since_cycle += added

    def on_forget(self, key: bytes | None, value: bytes | None, requested_at: float) -> None:
        """A forgotten user's events up to the request leave the window and stay out. A request
        the workers dead-letter (no key, a bad condition) is skipped here too."""
        idle_before = parse_forget_request(value)
        if key is None or isinstance(idle_before, Rejection):
            return
        if self.window.forget(key.decode("utf-8", "replace"), requested_at, idle_before):
            self.metrics.forgotten.inc()

    def on_item(self, key: bytes | None, value: bytes | None) -> None:
        self.metrics.items.inc()
        if value is None:
            if key is not None:
                self.items.pop(key.decode("utf-8", "replace"), None)
            return
        item = parse_item(value, key, self.item_limits)
        if not isinstance(item, Rejection):
            self.items[item.item_id] = item.to_dict()

    # -- cycles -----------------------------------------------------------------------------------

    def due(self, last_cycle_at: float, now: float) -> bool:
        t = self.settings.trainer
        return self.since_cycle >= t.min_events and now - last_cycle_at >= t.interval_s

    def cycle(self, progress: bool = False) -> CycleResult:
        """One cycle now; a failure is recorded (unhealthy) and raised."""
        t0 = time.perf_counter()
        self.cycles += 1
        m = self.metrics
        try:
            with self._staging_dir() as staging:
                result = run_cycle(
                    self.window.split(self.settings.trainer.holdout_fraction),
                    self.items, self.settings, staging, seed=self.cycles, progress=progress,
                )  # fmt: skip
        except Exception:
            self.error = traceback.format_exc(limit=8)
            m.cycles.labels("failed").inc()
            log.exception("training cycle %d failed; still serving the last published model",
                          self.cycles)  # fmt: skip
            raise
        self.error = ""
        self.since_cycle = 0
        self.last = result
        outcome = (
            "skipped"
            if result.decision is None
            else "published"
            if result.published
            else "rejected"
        )
        m.cycles.labels(outcome).inc()
        m.last_cycle_s.set(time.perf_counter() - t0)
        m.window_from.set(result.window.get("from_ts", 0.0))
        m.window_cut.set(result.window.get("cut_ts", 0.0))
        if result.decision is not None:
            m.gate.labels("candidate").set(result.decision.candidate.get("ndcg@10", 0.0))
            m.gate.labels("serving").set(result.decision.serving.get("ndcg@10", 0.0))
        if result.published:
            m.last_publish.set(time.time())
        log.info("cycle %d: %s (%s) in %.1f s", self.cycles, outcome, result.reason,
                 result.seconds)  # fmt: skip
        return result

    @contextlib.contextmanager
    def _staging_dir(self) -> Iterator[Path]:
        if self._staging is not None:
            yield self._staging / f"cycle-{self.cycles}"
            return
        with tempfile.TemporaryDirectory(prefix="streamrec-trainer-") as d:
            yield Path(d)

    # -- health -----------------------------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any]]:
        self.metrics.window_events.set(len(self.window))
        self.metrics.window_users.set(self.window.users)
        try:
            model = serving_model(Path(self.settings.model.checkpoint))
            serving = model.model_version if model is not None else "none"
        except Exception as exc:  # the workers refuse it too: say so here
            serving = f"unreadable: {exc}"
        body = {
            "status": "failing" if self.error else "ok" if self.caught_up else "catching_up",
            "serving_version": serving,
            "cycles": self.cycles,
            "events_since_cycle": self.since_cycle,
            "window": {"events": len(self.window), "users": self.window.users},
            "last_cycle": self.last.to_dict() if self.last else None,
            "error": self.error or None,
        }
        return (503 if self.error else 200), body


def serve_http(trainer: Trainer, host: str, port: int) -> ThreadingHTTPServer:
    """/health (JSON; 503 while the last cycle failed) and /metrics (Prometheus), in a thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.rstrip("/") or "/"
            if path == "/health":
                code, body = trainer.health()
                data, ctype = json.dumps(body, default=str).encode(), "application/json"
            elif path == "/metrics":
                trainer.health()  # refreshes the window gauges
                code, data, ctype = (
                    200,
                    generate_latest(trainer.metrics.registry),
                    CONTENT_TYPE_LATEST,
                )
            else:
                code, data, ctype = 404, b"not found\n", "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes every few seconds would drown the log

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="trainer-http", daemon=True).start()
    return server


def run_trainer(
    settings: Settings,
    once: bool = False,
    stop: threading.Event | None = None,
    staging: Path | None = None,
) -> int:
    """Read the topics and train until ``stop`` (or, with ``once``: read what the topics hold
    now, run one cycle, print its result as JSON and exit 0 if it published, 1 if not)."""
    from kafka import KafkaConsumer, TopicPartition

    t = settings.trainer
    if t.nice:
        with contextlib.suppress(OSError):
            os.nice(t.nice)
    trainer = Trainer(settings, staging)
    server = None if once else serve_http(trainer, t.host, t.port)
    topics = settings.topics
    by_topic = {topic: etype for etype, topic in topics.event_topics().items()}
    consumer = KafkaConsumer(
        **settings.kafka_client_config(),
        client_id="streamrec-trainer",
        group_id=None,
        enable_auto_commit=False,
    )
    try:
        parts = [
            TopicPartition(topic, p)
            for topic in [*by_topic, topics.items, topics.forget]
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(parts)
        event_parts = [tp for tp in parts if tp.topic in by_topic]
        since_ms = int((time.time() - t.window_s) * 1000)
        starts = consumer.offsets_for_times({tp: since_ms for tp in event_parts})
        # the catalog whole; forget requests whole too (a request older than the window may
        # name a user whose later events are in it)
        consumer.seek_to_beginning(*[tp for tp in parts if tp.topic not in by_topic])
        for tp in event_parts:
            found = starts.get(tp)
            if found is None:
                consumer.seek_to_end(tp)  # nothing in the window on this partition yet
            else:
                consumer.seek(tp, found.offset)
        ends = consumer.end_offsets(parts)
        log.info("trainer reading %d partitions; window %.0f s, serving from %s", len(parts),
                 t.window_s, settings.model.checkpoint)  # fmt: skip
        last_cycle = time.monotonic()
        while stop is None or not stop.is_set():
            batch = consumer.poll(timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                for rec in records:
                    if tp.topic == topics.items:
                        trainer.on_item(rec.key, rec.value)
                    elif tp.topic == topics.forget:
                        trainer.on_forget(rec.key, rec.value, rec.timestamp / 1000)
                    else:
                        trainer.on_event(
                            by_topic[tp.topic], rec.key, rec.value, rec.timestamp / 1000
                        )
            if not trainer.caught_up:
                trainer.caught_up = all(consumer.position(tp) >= ends[tp] for tp in parts)
                if once and trainer.caught_up:
                    result = trainer.cycle()
                    print(json.dumps(result.to_dict(), indent=1, default=str))
                    return 0 if result.published else 1
                continue
            now = time.monotonic()
            if trainer.due(last_cycle, now):
                with contextlib.suppress(Exception):  # recorded and logged by cycle()
                    trainer.cycle()
                last_cycle = time.monotonic()
        return 0
    finally:
        consumer.close()
        if server is not None:
            server.shutdown()
