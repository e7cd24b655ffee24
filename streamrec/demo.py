"""`streamrec demo`: the whole product on one machine, end to end, as an operator would run it.

A local broker (started if none is running), a synthetic world, a model trained on its first
80% of time, a real `streamrec worker` process, the history backfilled through Kafka, then the
rest of the events streamed live at a fixed rate while a separate consumer reads the lists and
measures event -> list latency. Ends with a summary.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kafka import KafkaConsumer, KafkaProducer

from streamrec.dashboard.process import DashboardProcess
from streamrec.eventlog import write_events, write_items
from streamrec.generate import GeneratorConfig, generate
from streamrec.kafka import broker, groups
from streamrec.replay import replay
from streamrec.settings import Settings
from streamrec.train import train_from_files
from streamrec.worker_process import WorkerProcess
from streams.topics import create_topics

BAD_EVENTS: list[tuple[str, bytes | None, bytes]] = [
    ("click", b"u-bad", b"{not json"),
    ("click", b"u-bad", b'{"event_id": "x1", "user_id": "u-bad", "item_id": "i1"}'),
    (
        "browse",
        b"u-bad",
        b'{"event_id": "x2", "user_id": "u-bad", "item_id": "i1", "ts": "yesterday"}',
    ),
    ("purchase", b"u-bad", b'{"event_id": "x3", "user_id": "u-bad", "item_id": "i1", "ts": 1e15}'),
    ("browse", b"u-bad", b"\xff\xfe garbage"),
]


@dataclass(frozen=True)
class DemoConfig:
    users: int = 1000
    items: int = 600
    rate: float = 400.0
    keep_broker: bool = False
    days: int = 14
    seed: int = 7
    live_fraction: float = 0.2
    epochs: int = 6
    keep_s: float = 0.0  # the worker and the dashboard stay up this long after the summary
    screenshot: Path | None = None  # a PNG of the dashboard during the live phase
    dashboard: bool = True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ListCollector(threading.Thread):
    """Reads the output topic from a separate consumer and timestamps every list on arrival."""

    def __init__(self, s: Settings) -> None:
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(
            s.topics.recommendations,
            **s.kafka_client_config(),
            group_id=None,
            auto_offset_reset="earliest",
            # The broker answers a fetch as soon as one record is there, so the default wait
            # (500 ms) adds no latency; a 5 ms wait made an idle reader poll 200 times a second
            # (~20% of a core here, plus the broker's share) on the machine the worker runs on.
        )
        self.lists: list[tuple[float, dict[str, Any]]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            for records in self.consumer.poll(timeout_ms=100).values():
                now = time.time()
                # a null value is a forgotten user's tombstone, not a list
                self.lists.extend((now, orjson.loads(r.value)) for r in records if r.value)
        self.consumer.close()

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)


def _port_or_free(port: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return _free_port()
    return port


def _screenshot(url: str, path: Path, after_s: float) -> threading.Thread:
    """In the background: wait ``after_s``, open the dashboard in headless Chromium, inspect the
    first user just served, and save the page."""

    def shoot() -> None:
        from streamrec.dashboard import browser

        time.sleep(after_s)
        try:
            driver = browser.chromium(1400, 1900)
        except Exception as exc:
            print(f"   screenshot skipped: {exc}")
            return
        try:
            driver.get(url)
            time.sleep(6.0)  # a few polls: the charts have lines
            users = driver.find_elements("css selector", "#recent-users a")
            if users:
                users[0].click()
                time.sleep(3.0)
            path.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(path))
            print(f"\n   dashboard screenshot -> {path}")
        finally:
            driver.quit()

    thread = threading.Thread(target=shoot, daemon=True)
    thread.start()
    return thread


def _wait_processed(worker: WorkerProcess, s: Settings, target: int) -> int:
    """Wait until the worker has read ``target`` events, published a list, and committed the
    offsets of every event sent (each listed or dead-lettered, and flushed); how many it read.
    Reading is not enough before the live phase: a worker that has read the backfill may still
    be ranking it or flushing its state, and the live events would queue behind that."""
    worker.wait_counter("lists_out", 1)
    read = worker.wait_counter("events_in", target)
    groups.wait_for(
        s.kafka_client_config(),
        s.app.id,
        s.topics.event_topics().values(),
        timeout_s=worker.wait_s,
        poll_s=0.2,
        alive=worker.alive,
    )
    return read


def run_demo(settings: Settings, cfg: DemoConfig) -> int:
    run_id = time.strftime("%Y%m%d-%H%M%S")
    work = Path("var/demo") / run_id
    work.mkdir(parents=True, exist_ok=True)
    started_broker = False
    running, text = broker.status()
    if running:
        bootstrap = text.split()[-1]  # "running <pid> 127.0.0.1:PORT"
        print(f"== using the local Kafka broker at {bootstrap}")
    else:
        print("== starting the local Kafka broker")
        bootstrap = broker.start()
        started_broker = True
    s = settings.replace(
        kafka={"bootstrap_servers": bootstrap},
        topics={
            name: f"demo-{run_id}.{getattr(settings.topics, name).split('.')[-1]}"
            for name in ("browse", "click", "purchase", "items", "recommendations", "dlq", "forget")
        },
        app={
            "id": f"streamrec-demo-{run_id}",
            "datadir": str(work / "worker"),
            "web_port": _free_port(),
        },
        model={"checkpoint": str(work / "model")},
        dashboard={"port": _port_or_free(settings.dashboard.port)},
    )
    worker: WorkerProcess | None = None
    dashboard: DashboardProcess | None = None
    shot: threading.Thread | None = None
    collector: ListCollector | None = None
    try:
        print(f"== generating {cfg.users} users, {cfg.items} items, {cfg.days:g} days of events")
        world = generate(
            GeneratorConfig(n_users=cfg.users, n_items=cfg.items, days=cfg.days, seed=cfg.seed)
        )
        events = world.events
        cut = int(len(events) * (1 - cfg.live_fraction))
        history, live = events[:cut], events[cut:]
        write_items(work / "items.jsonl", world.items)
        write_events(work / "history.jsonl", history)
        print(f"   {len(events)} events: {len(history)} history, {len(live)} live")

        print("== training the encoder on the history")
        print(
            train_from_files(
                work / "history.jsonl", work / "items.jsonl", work / "model", epochs=cfg.epochs
            )
        )

        print("== creating topics")
        for topic, outcome in create_topics(s).items():
            print(f"   {outcome:8} {topic}")

        print("== starting a worker (streamrec worker)")
        worker = WorkerProcess(s, work / "worker.log", wait_s=600).start()
        if cfg.dashboard:
            dashboard = DashboardProcess(s, work / "dashboard.log").start()
            print(f"== dashboard (streamrec dashboard): {dashboard.url}  -- open it to watch")
        collector = ListCollector(s)
        collector.start()

        print("== publishing the catalog and backfilling the history through Kafka")
        replay(
            history,
            s.kafka_client_config(),
            s.topics.event_topics(),
            rate=None,
            items=world.items,
            items_topic=s.topics.items,
            total=len(history),
        )
        worker.wait_healthy()
        backfill_start = time.monotonic()
        processed = _wait_processed(worker, s, len(history))
        print(
            f"   worker caught up: {processed} events processed"
            f" ({time.monotonic() - backfill_start:.1f} s after the backfill was sent)"
        )

        print(
            f"== streaming {len(live)} live events at {cfg.rate:g}/s (+{len(BAD_EVENTS)} malformed ones)"
        )
        before_live = worker.counters()
        live_start = time.time()
        if cfg.screenshot is not None and dashboard is not None:
            # midway through the live phase, so the charts show traffic
            shot = _screenshot(dashboard.url, cfg.screenshot, min(20.0, len(live) / cfg.rate / 2))
        producer = KafkaProducer(**s.kafka_client_config())
        for etype, key, value in BAD_EVENTS:
            producer.send(s.topics.event_topics()[etype], key=key, value=value)
        producer.flush()
        producer.close()
        summary = replay(
            live,
            s.kafka_client_config(),
            s.topics.event_topics(),
            rate=cfg.rate,
            retime=True,
            total=len(live),
        )
        processed = _wait_processed(worker, s, len(history) + len(live) + len(BAD_EVENTS))
        time.sleep(1.0)
        collector.stop()
        health = worker.health()[1] or {}

        live_lists = [(t, r) for t, r in collector.lists if r["event_ts"] >= live_start - 1]
        lat = np.array([(t - r["event_ts"]) * 1e3 for t, r in live_lists])
        users = {r["user_id"] for _, r in live_lists}
        counters = health.get("metrics", {}).get("counters", {})
        sources = Counter(r["source"] for _, r in live_lists)
        print()
        print("== summary")
        print(
            f"   live events sent         {summary.events_sent} in {summary.seconds:.1f} s ({summary.events_per_s:.0f}/s)"
        )
        print(
            f"   events processed         {processed} (accepted {counters.get('events_accepted', 0)}, "
            f"duplicates {counters.get('events_duplicate', 0)}, dead-lettered {counters.get('events_rejected', 0)})"
        )
        print(
            f"   lists out (live)         {len(live_lists)} from {dict(sources)}"
            " (a user's events within one micro-batch share one list)"
        )
        print(f"   users served (live)      {len(users)}")
        reordered = counters.get("events_reordered", 0)
        print(
            f"   read out of event time   {reordered} events, {reordered - before_live.get('events_reordered', 0)}"
            " of them live (each an exact rebuild of its user's encoder state; the worker merges"
            " the three topics by event time)"
        )
        if len(lat):
            # where it goes: event (stamped at its send) -> list emitted in the worker, then
            # emitted -> readable by a consumer of the output topic
            inside = np.array([(r["emitted_at"] - r["event_ts"]) * 1e3 for _, r in live_lists])
            out = np.array([(t - r["emitted_at"]) * 1e3 for t, r in live_lists])
            print(
                f"   event -> list latency    p50 {np.percentile(lat, 50):.1f} ms   p99 {np.percentile(lat, 99):.1f} ms"
                f"   (produce -> list readable on {s.topics.recommendations})"
            )
            print(
                f"     in the worker          p50 {np.percentile(inside, 50):.1f} ms   p99 {np.percentile(inside, 99):.1f} ms"
                "   (event -> list handed to the producer)"
            )
            print(
                f"     to the reader          p50 {np.percentile(out, 50):.1f} ms   p99 {np.percentile(out, 99):.1f} ms"
                "   (list handed to the producer -> readable)"
            )
        snap = health.get("metrics", {})
        size, took = snap.get("batch_size", {}), snap.get("batch_ms", {})
        if size and took:
            print(
                f"   micro-batches (recent)   {size['p50']:.0f} lists p50, {size['p99']:.0f} p99;"
                f" {took['p50']:.1f} ms p50, {took['p99']:.1f} ms p99 to rank and hand over"
            )
        print(f"   model                    {health.get('model_version')}")
        if live_lists:
            example = live_lists[-1][1]
            print(f"   example list for {example['user_id']} (source {example['source']}), top 5:")
            for rank, entry in enumerate(example["items"][:5], 1):
                why = entry.get("why", {})
                reason = f"{why.get('kind', '')}: {why.get('text', '')}" if why else ""
                print(f"     {rank}. {entry['item_id']:<10} {entry['score']:8.3f}  {reason}")
        print(f"   run directory            {work}")
        if dashboard is not None:
            print(f"   dashboard                {dashboard.url}")
        ok = len(live_lists) > 0 and counters.get("events_rejected", 0) >= len(BAD_EVENTS)
        if shot is not None:
            shot.join(timeout=120)
        if cfg.keep_s > 0:
            until = "Ctrl-C" if cfg.keep_s == float("inf") else f"{cfg.keep_s:g} s"
            print(f"== keeping the worker and the dashboard up ({until})")
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(cfg.keep_s if cfg.keep_s != float("inf") else 10**9)
        return 0 if ok else 1
    finally:
        if collector is not None and collector.is_alive():
            with contextlib.suppress(Exception):
                collector.stop()
        if dashboard is not None:
            dashboard.stop()
        if worker is not None:
            worker.stop()
        if started_broker and not cfg.keep_broker:
            broker.stop()
