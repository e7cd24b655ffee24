"""Throughput and freshness of the live path on the real broker, against the framework's floor.

One run, per repeat, on fresh topics and fresh consumer groups:
  1. a backlog of events (user sessions over the catalog) is produced flat out;
  2. the pass-through Faust agent (bench/passthrough.py: consume, decode, produce) drains it;
  3. a real `streamrec worker` (100k-item catalog, d=64 model with its candidate ranker) drains
     the same backlog
     -> sustained events/s of each, and their ratio; and again with the event-time merge of the
     three topics off (ingest.lateness_ms=0) -> what the merge buys, in events read out of
     event-time order (each a rebuild) and events/s; and with the reasons off
     (recs.explain=false) -> what the explanations cost the live path, in events/s; and, with
     --workers N, by N workers in one consumer group (each starting from the saved item graph)
     -> events/s of Kafka's scale-out on this machine;
  4. events are produced at a fixed rate (default 1,000/s) into the running worker
     -> event -> list latency p50 / p99 / p99.9, the worker's CPU and resident memory;
  5. the pass-through agent gets the same fixed-rate load on its own topics (its latency floor).
Then, in the same run, the per-event costs behind it: the incremental encoder step vs a full
re-encode (bench/encoder.py), the exact scan vs the HNSW graph at this catalog size
(bench/retrieval.py), and per list the candidate sources and the ranker vs retrieval alone
(bench/ranker.py).
Producer and consumer are separate processes; latency is the consumer's arrival time minus the
event time the producer stamped just before sending. At the end: per-user state on disk (the
RocksDB records) and in memory (the encoder cache), and medians (min-max) over repeats.

Run:  .venv/bin/python bench/live.py                      # 100k items, 100k users, d=64
      .venv/bin/python bench/live.py --items 1000000 --rate 500
      (--bootstrap HOST:PORT uses a running broker; otherwise one is started and stopped)
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from workload import Sessions, make_items, write_model  # noqa: E402

from streamrec.kafka import broker  # noqa: E402
from streamrec.replay import fetch_topic_metadata  # noqa: E402
from streamrec.settings import Settings, load_settings  # noqa: E402
from streamrec.wait import wait_until  # noqa: E402
from streamrec.worker_process import WorkerProcess  # noqa: E402
from streams.topics import create_topics  # noqa: E402

# -- processes: producer and collector -----------------------------------------------------------


def _settings(env: dict[str, str]) -> Settings:
    return load_settings(env=env)


def _producer(s: Settings, linger_ms: int) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(
        **s.kafka_client_config(), linger_ms=linger_ms, batch_size=256 * 1024, acks=1
    )


def produce(
    env: dict[str, str],
    items: list[dict[str, Any]],
    users: int,
    seed: int,
    prefix: str,
    n: int,
    rate: float,
    done: Any,
    linger_ms: int = 0,
) -> None:
    """Send ``n`` session events, flat out (rate 0) or paced at ``rate`` per second; each event's
    ``ts`` is stamped just before its send, so a paced producer's ``linger_ms`` counts in the
    latency. Reports (events, seconds, per-user final event ids)."""
    s = _settings(env)
    topics = s.topics.event_topics()
    producer = _producer(s, linger_ms=20 if rate == 0 else linger_ms)
    events = Sessions(items, users, seed=seed).events(prefix)
    last: dict[str, str] = {}
    fetch_topic_metadata(producer, topics.values())  # as a paced replay does, before the clock
    t0 = time.perf_counter()
    for i in range(n):
        if rate:
            ahead = t0 + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        event_id, etype, user, item = next(events)
        body = {"event_id": event_id, "user_id": user, "item_id": item, "ts": time.time()}
        producer.send(topics[etype], key=user.encode(), value=orjson.dumps(body))
        last[user] = event_id
    producer.flush()
    seconds = time.perf_counter() - t0
    producer.close()
    done.put((n, seconds, list(last.values())))


def collect(env: dict[str, str], topic: str, out: Any, stop: Any) -> None:
    """Timestamp every record of ``topic`` on arrival: (arrival, event_id, event_ts) batches."""
    from kafka import KafkaConsumer, TopicPartition

    s = _settings(env)
    consumer = KafkaConsumer(
        **s.kafka_client_config(), group_id=None, max_poll_records=2000
    )  # the default fetch wait adds no latency (see streamrec/demo.py's reader) and no load
    deadline = time.monotonic() + 60
    while not (found := consumer.partitions_for_topic(topic)):
        # a topic created a moment ago may not be in this client's metadata yet
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} has no partitions")
        consumer.topics()
        time.sleep(0.2)
    parts = [TopicPartition(topic, p) for p in sorted(found)]
    consumer.assign(parts)
    consumer.seek_to_end(*parts)
    for p in parts:
        consumer.position(p)  # resolve now: records from here on are this run's
    out.put("ready")
    batch: list[tuple[float, str, float]] = []
    flushed = time.monotonic()
    while not stop.is_set():
        for records in consumer.poll(timeout_ms=50).values():
            now = time.time()
            for r in records:
                body = orjson.loads(r.value)
                batch.append((now, body["event_id"], float(body["event_ts"])))
        if batch and time.monotonic() - flushed > 0.2:
            out.put(batch)
            batch, flushed = [], time.monotonic()
    if batch:
        out.put(batch)
    consumer.close()


class Collector:
    """A collector process and what it has reported so far."""

    def __init__(self, ctx: Any, env: dict[str, str], topic: str) -> None:
        self.queue = ctx.Queue()
        self.stop_event = ctx.Event()
        self.proc = ctx.Process(target=collect, args=(env, topic, self.queue, self.stop_event))
        self.proc.start()
        if self.queue.get(timeout=60) != "ready":
            raise RuntimeError("collector failed to start")
        self.records: list[tuple[float, str, float]] = []

    def pump(self, wait_s: float = 0.2) -> None:
        with contextlib.suppress(Exception):
            while True:
                self.records.extend(self.queue.get(timeout=wait_s))
                wait_s = 0.0

    def close(self) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + 15
        while self.proc.is_alive() and time.monotonic() < deadline:
            self.pump(0.2)  # keep reading: its queue must drain before it can exit
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(5)


# -- the apps under test ---------------------------------------------------------------------------


class App:
    """One process under test (the pass-through agent or a streamrec worker), run through the
    project's WorkerProcess; plus its CPU and memory."""

    def __init__(self, name: str, settings: Settings, argv: list[str], log: Path) -> None:
        self.name = name
        self.settings = settings
        self.process = WorkerProcess(settings, log, name=name, cwd=REPO, argv=argv)

    def start(self) -> App:
        self.process.start()
        return self

    @property
    def ps(self) -> psutil.Process:
        assert self.process.proc is not None
        return psutil.Process(self.process.proc.pid)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def alive(self) -> None:
        self.process.check_alive()

    def get(self, path: str) -> Any:
        return self.process.get_bytes(path, timeout_s=3)[1]

    def stop(self) -> None:
        self.process.stop()


def counters(app: App) -> dict[str, int]:
    body = app.get("/health/")
    return dict(orjson.loads(body)["metrics"]["counters"]) if body else {}


def caught_up(apps: list[App], sent: int, recs: list[tuple[float, str, float]]) -> bool:
    """Every event taken in by the apps and done (``events_pending`` 0: read but not yet listed
    counts, or a drain would end while the merge and the batcher still hold up to a batch of
    them), and every list published so far arrived. (The per-user last event is no marker: a
    user's events span three topics, read in no fixed order.)"""
    bodies = [app.get("/health/") for app in apps]
    if not all(bodies):
        return False
    health = [orjson.loads(b) for b in bodies]
    c = [h["metrics"]["counters"] for h in health]
    return (
        sum(x.get("events_in", 0) for x in c) >= sent
        and all(h.get("events_pending") == 0 for h in health)
        and len(recs) >= sum(x.get("lists_out", 0) for x in c) > 0
    )


def worker_counts(app: App) -> dict[str, int]:
    """A worker's counters and its encoder cache's hit/miss counts (a miss is a rebuild)."""
    g = gauges(app)
    cache = {k: int(g[k]) for k in ("encoder_cache_hits", "encoder_cache_misses") if k in g}
    return {**counters(app), **cache}


def gauges(app: App) -> dict[str, float]:
    text = app.get("/metrics/")
    out: dict[str, float] = {}
    for line in (text or b"").decode().splitlines():
        if line and not line.startswith("#") and " " in line:
            name, value = line.rsplit(" ", 1)
            with contextlib.suppress(ValueError):
                out[name.removeprefix("streamrec_")] = float(value)
    return out


# -- measurements -----------------------------------------------------------------------------------


@dataclass
class Repeat:
    drain: dict[str, float] = field(default_factory=dict)  # app -> events/s
    latency: dict[str, list[float]] = field(default_factory=dict)  # app -> seconds per list
    cpu: dict[str, float] = field(default_factory=dict)  # app -> cores busy in the rate phase
    rss_mb: dict[str, float] = field(default_factory=dict)
    lists_per_event: float = 0.0
    counters: dict[str, dict[str, int]] = field(default_factory=dict)  # app -> after its drain
    gauges: dict[str, float] = field(default_factory=dict)
    state: dict[str, float] = field(default_factory=dict)


def wait_for(cond: Any, timeout_s: float, what: str, app: App | None = None) -> None:
    wait_until(
        lambda: bool(cond()), timeout_s=timeout_s, what=what, poll_s=0.1,
        abort=None if app is None else app.alive,
    )  # fmt: skip


def drain(app: App | Sequence[App], col: Collector, done: Any, timeout_s: float) -> float:
    """Start ``app`` (or several, one consumer group) on a backlog; seconds from the first
    output to ``done(records)``."""
    apps = [app] if isinstance(app, App) else list(app)
    for a in apps:
        a.start()
    wait_until(
        lambda: (col.pump(), done(col.records))[1],
        timeout_s=timeout_s,
        what=f"{apps[0].name} drain",
        poll_s=0.1,
        abort=lambda: [a.alive() for a in apps],
    )
    first = min(r[0] for r in col.records)
    last = max(r[0] for r in col.records)
    return last - first


def rate_phase(
    ctx: Any, app: App, col: Collector, env: dict[str, str], load: dict[str, Any], prefix: str
) -> tuple[list[float], float, float, float]:
    """Fixed-rate events into a running app: (latencies, CPU cores, RSS MB, lists per event)."""
    col.pump()
    col.records.clear()
    q = ctx.Queue()
    n = int(load["rate"] * load["seconds"])
    cpu0, t0 = app.cpu_s(), time.perf_counter()
    p = ctx.Process(
        target=produce,
        args=(env, load["items"], load["users"], load["seed"] + 1, prefix, n, load["rate"], q),
        kwargs={"linger_ms": load["linger_ms"]},
    )
    p.start()
    sent, _, _ = q.get()
    p.join()
    time.sleep(1.0)  # let the tail of lists arrive
    col.pump(0.5)
    cpu = (app.cpu_s() - cpu0) / (time.perf_counter() - t0)
    rss = app.ps.memory_info().rss / 2**20
    mine = [r for r in col.records if r[1].startswith(prefix + "-")]
    return [r[0] - r[2] for r in mine], cpu, rss, len(mine) / max(1, sent)


def warm_up(ctx: Any, app: App, col: Collector, env: dict[str, str], load: dict[str, Any]) -> None:
    """Wait until ``app`` has joined its group and answers (a probe event comes out)."""
    q = ctx.Queue()
    produce(env, load["items"], load["users"], 0, "probe", 1, 0, q)
    q.get()
    wait_for(
        lambda: (col.pump(), any(r[1].startswith("probe-") for r in col.records))[1],
        120,
        f"{app.name} start",
        app,
    )


def state_on_disk(datadir: Path) -> dict[str, float]:
    """Per-user records in the worker's RocksDB tables (read after it stopped)."""
    from rocksdict import AccessType, Rdict

    sizes: list[int] = []
    for db in sorted(datadir.rglob("users-*.db")):
        store = Rdict(str(db), access_type=AccessType.read_only())
        try:
            sizes += [len(v) for v in store.values()]
        finally:
            store.close()
    disk = sum(f.stat().st_size for f in datadir.rglob("*") if f.is_file())
    if not sizes:
        return {}
    return {
        "users": float(len(sizes)),
        "record_mean_b": float(np.mean(sizes)),
        "record_p99_b": float(np.percentile(sizes, 99)),
        "record_max_b": float(max(sizes)),
        "disk_b_per_user": disk / len(sizes),
    }


# -- orchestration ----------------------------------------------------------------------------------


def settings_for(
    base: Settings, args: argparse.Namespace, tag: str, app_id: str, out: Path
) -> Settings:
    topics = ("browse", "click", "purchase", "recommendations", "dlq", "forget")
    names = {t: f"{tag}.{t}" for t in topics}
    return base.replace(
        topics={**names, "items": f"{args.run}.items", "partitions": args.partitions},
        app={
            "id": app_id,
            "datadir": str(out / app_id),
            "web_port": broker.free_port(),
            "log_level": "warning",
            "fetch_max_wait_ms": args.fetch_max_wait_ms,
        },
        model={"checkpoint": str(out / "model"), "cache_mb": args.cache_mb, "threads": 1},
        recs={
            "batch_max": args.batch_max,
            "batch_wait_ms": args.batch_wait_ms,
            "batch_max_behind": max(args.batch_max, args.batch_max_behind),
            "batch_wait_behind_ms": args.batch_wait_behind_ms,
        },
        retrieval={"method": args.retrieval},
        ingest={"behind_wait_ms": args.behind_wait_ms},
    )


def one_repeat(
    ctx: Any, base: Settings, args: argparse.Namespace, load: dict[str, Any], r: int, out: Path
) -> Repeat:
    rep = Repeat()
    live_s = settings_for(base, args, f"{args.run}r{r}", f"{args.run}-live-{r}", out)
    pass_s = settings_for(base, args, f"{args.run}r{r}", f"{args.run}-pass-{r}", out)
    pass_s = pass_s.replace(topics={"recommendations": f"{args.run}r{r}.passthrough"})
    create_topics(live_s)
    create_topics(pass_s)
    env = live_s.to_env()

    q = ctx.Queue()
    produce(env, load["items"], load["users"], load["seed"] + 100 * r, "bk", args.backlog, 0, q)
    sent, secs, _ = q.get()
    log(f"repeat {r + 1}: backlog of {sent:,} events produced at {sent / secs:,.0f}/s")

    py = sys.executable
    # 2. the floor drains the backlog
    col = Collector(ctx, pass_s.to_env(), pass_s.topics.recommendations)
    floor = App("pass-through", pass_s, [py, "bench/passthrough.py"], out / f"pass-{r}.log")
    seconds = drain(floor, col, lambda recs: len(recs) >= sent, args.timeout)
    rep.drain["pass-through"] = sent / seconds
    floor.stop()
    col.close()

    # 3. streamrec drains the same backlog, then 4. fixed rate
    col = Collector(ctx, env, live_s.topics.recommendations)
    worker = App("streamrec", live_s, [py, "-m", "streamrec", "worker"], out / f"live-{r}.log")

    def drained(recs: list[tuple[float, str, float]]) -> bool:
        return caught_up([worker], sent, recs)

    spy = None
    if args.profile and r == 0:
        worker.start()
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(worker.ps.pid),
                "--rate",
                "200",
                "--nonblocking",
                "--format",
                "raw",
                "-o",
                str(out / "profile.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        worker.start = lambda: worker  # type: ignore[method-assign]  # started above
    seconds = drain(worker, col, drained, args.timeout)
    rep.drain["streamrec"] = sent / seconds
    rep.counters["streamrec"] = worker_counts(worker)
    lat, cpu, rss, lpe = rate_phase(ctx, worker, col, env, load, f"lr{r}")
    rep.latency["streamrec"], rep.cpu["streamrec"], rep.rss_mb["streamrec"] = lat, cpu, rss
    rep.lists_per_event = lpe
    rep.gauges = gauges(worker)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    worker.stop()
    col.close()
    rep.state = state_on_disk(Path(live_s.app.datadir))

    # 3b. the same backlog with one thing changed: the merge off (events go through as they are
    # read), or the reasons off (recs.explain = false: what explanations cost the live path)
    variants = [(MERGE_OFF, "nomerge", {"ingest": {"lateness_ms": 0.0}}, args.merge_off)]
    variants.append((REASONS_OFF, "noreasons", {"recs": {"explain": False}}, args.reasons_off))
    for name, tag, change, wanted in variants:
        if not wanted:
            continue
        off_s = settings_for(base, args, f"{args.run}r{r}", f"{args.run}-{tag}-{r}", out)
        off_s = off_s.replace(topics={"recommendations": f"{args.run}r{r}.{tag}"}, **change)
        create_topics(off_s)
        col = Collector(ctx, off_s.to_env(), off_s.topics.recommendations)
        worker = App(name, off_s, [py, "-m", "streamrec", "worker"], out / f"{tag}-{r}.log")
        seconds = drain(worker, col, drained, args.timeout)
        rep.drain[name] = sent / seconds
        rep.counters[name] = worker_counts(worker)
        worker.stop()
        col.close()

    # 3c. the same backlog drained by several workers in one consumer group (Kafka's scale-out)
    if args.workers > 1:
        name = f"streamrec, {args.workers} workers"
        tag = f"w{args.workers}"
        group = settings_for(base, args, f"{args.run}r{r}", f"{args.run}-{tag}-{r}", out)
        group = group.replace(topics={"recommendations": f"{args.run}r{r}.{tag}"})
        create_topics(group)
        col = Collector(ctx, group.to_env(), group.topics.recommendations)
        workers = []
        for w in range(args.workers):
            s = group.replace(
                app={"datadir": f"{group.app.datadir}-{w}", "web_port": broker.free_port()}
            )
            # Each starts from the item graph the first worker saved (as after a restart), so
            # the drain is not staggered by graph builds running side by side.
            graph = Path(live_s.app.datadir) / "item-graph"
            if graph.is_dir():
                shutil.copytree(graph, Path(s.app.datadir) / "item-graph")
            cmd = [py, "-m", "streamrec", "worker"]
            workers.append(App(f"{name} #{w + 1}", s, cmd, out / f"{tag}-{r}-{w}.log"))

        def group_drained(recs: list[tuple[float, str, float]]) -> bool:
            return caught_up(workers, sent, recs)

        seconds = drain(workers, col, group_drained, args.timeout)
        rep.drain[name] = sent / seconds
        totals: dict[str, int] = {}
        for w in workers:
            for k, v in worker_counts(w).items():
                totals[k] = totals.get(k, 0) + v
        rep.counters[name] = totals
        for w in workers:
            w.stop()
        col.close()

    # 5. the floor at the same fixed rate, on topics of its own
    solo = settings_for(base, args, f"{args.run}p{r}", f"{args.run}-passrate-{r}", out)
    create_topics(solo)
    col = Collector(ctx, solo.to_env(), solo.topics.recommendations)
    floor = App("pass-through", solo, [py, "bench/passthrough.py"], out / f"passrate-{r}.log")
    floor.start()
    warm_up(ctx, floor, col, solo.to_env(), load)
    lat, cpu, rss, _ = rate_phase(ctx, floor, col, solo.to_env(), load, f"pr{r}")
    rep.latency["pass-through"], rep.cpu["pass-through"] = lat, cpu
    rep.rss_mb["pass-through"] = rss
    floor.stop()
    col.close()
    return rep


MERGE_OFF = "streamrec, merge off"
REASONS_OFF = "streamrec, reasons off"


def log(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def med(values: list[float], fmt: str = "{:,.0f}") -> str:
    if not values:
        return "-"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def report(reps: list[Repeat], args: argparse.Namespace) -> None:
    def pct(app: str, q: float) -> list[float]:
        return [1e3 * float(np.percentile(r.latency[app], q)) for r in reps if r.latency.get(app)]

    ratio = [r.drain["streamrec"] / r.drain["pass-through"] for r in reps]
    print(
        f"\nbench/live.py: {args.items:,} items, {args.users:,} users, d={args.dim}, "
        f"{args.partitions} partitions, backlog {args.backlog:,}, {args.rate:,.0f} events/s for "
        f"{args.seconds:.0f} s, retrieval={args.retrieval}, {len(reps)} repeats; "
        "median (min-max)"
    )
    print("\n| measure | pass-through (floor) | streamrec | streamrec / floor |")
    print("|---|---|---|---|")
    print(
        f"| backlog drain, events/s | {med([r.drain['pass-through'] for r in reps])} | "
        f"{med([r.drain['streamrec'] for r in reps])} | {med(ratio, '{:.2f}')} |"
    )
    for q in (50, 99, 99.9):
        print(
            f"| event -> list p{q:g} at {args.rate:,.0f}/s, ms | {med(pct('pass-through', q), '{:.1f}')} "
            f"| {med(pct('streamrec', q), '{:.1f}')} | |"
        )
    print(
        f"| CPU at {args.rate:,.0f}/s, cores | {med([r.cpu['pass-through'] for r in reps], '{:.2f}')} "
        f"| {med([r.cpu['streamrec'] for r in reps], '{:.2f}')} | |"
    )
    print(
        f"| resident memory, MB | {med([r.rss_mb['pass-through'] for r in reps])} "
        f"| {med([r.rss_mb['streamrec'] for r in reps])} | |"
    )
    print(
        f"| lists per event at {args.rate:,.0f}/s | 1 | {med([r.lists_per_event for r in reps], '{:.3f}')} | |"
    )
    g = reps[-1].gauges
    st = reps[-1].state
    cap = g.get("encoder_cache_capacity", 0.0)
    per_user = g.get("encoder_cache_bytes_budget", 0.0) / cap if cap else 0.0
    print("\nlast repeat, worker internals:")
    for k in (
        "events_in_total",
        "events_reordered_total",
        "lists_out_total",
        "encoder_cache_hits",
        "encoder_cache_misses",
        "encoder_cache_cached_users",
        "encoder_cache_capacity",
        "retrieval_ann_queries",
        "retrieval_exact_queries",
        "retrieval_ann_fallbacks",
        "retrieval_graph_items",
        "retrieval_graph_build_s",
        "retrieval_ef_search",
        "retrieval_recall_estimate",
        "batch_seconds_sum",
        "batch_seconds_count",
        "batch_size_sum",
        "batcher_behind_batches",
        "merge_released_in_order",
        "merge_released_late",
        "merge_released_forced",
        "gc_collections_gen2",
        "gc_seconds_gen0",
        "gc_seconds_gen1",
        "gc_seconds_gen2",
        "gc_frozen_objects",
    ):
        if k in g:
            print(f"  {k}: {g[k]:,.1f}")
    if st:
        print(
            f"\nper-user state: {st['users']:,.0f} users in RocksDB, record mean "
            f"{st['record_mean_b']:,.0f} B (p99 {st['record_p99_b']:,.0f}, max "
            f"{st['record_max_b']:,.0f}), {st['disk_b_per_user']:,.0f} B/user on disk incl. "
            f"RocksDB overhead; in memory {per_user / 1024:,.1f} KB per cached user, "
            f"{cap:,.0f} users in a {args.cache_mb} MB encoder cache"
        )
    if any(len(r.drain) > 2 for r in reps):
        print(
            "\none thing changed, backlog drain (same backlog, same run): the event-time merge of "
            "the three topics off; the reasons (recs.explain) off; several workers in one group"
        )
        print(
            "\n| worker | drain events/s | vs streamrec | events read out of event-time order "
            "| encoder rebuilds | lists |"
        )
        print("|---|---|---|---|---|---|")
        for app in ("streamrec", MERGE_OFF, REASONS_OFF, f"streamrec, {args.workers} workers"):
            c = [r.counters.get(app, {}) for r in reps if app in r.counters]
            if not c:
                continue
            rel = [r.drain[app] / r.drain["streamrec"] for r in reps if app in r.drain]
            print(
                f"| {app} | {med([r.drain[app] for r in reps if app in r.drain])} | "
                f"{med(rel, '{:.2f}')} | "
                f"{med([float(x.get('events_reordered', 0)) for x in c])} | "
                f"{med([float(x.get('encoder_cache_misses', 0)) for x in c])} | "
                f"{med([float(x.get('lists_out', 0)) for x in c])} |"
            )
    summary_table(reps, args, pct, ratio)
    print(
        f"\nsummary: streamrec drained {med([r.drain['streamrec'] for r in reps])} events/s = "
        f"{med(ratio, '{:.2f}')} of the pass-through agent; p99 event -> list "
        f"{med(pct('streamrec', 99), '{:.1f}')} ms at {args.rate:,.0f} events/s"
    )


def summary_table(
    reps: list[Repeat], args: argparse.Namespace, pct: Any, ratio: list[float]
) -> None:
    """Fixed row names, one per line, for scripts as well as people."""
    print(
        f"\nSUMMARY (median of {len(reps)} repeats; latency at {args.rate:,.0f} events/s,"
        f" producer linger {args.linger_ms} ms)"
    )
    print(f"{'row':<18} {'floor':>12} {'streamrec':>12}")
    drain_f = [r.drain["pass-through"] for r in reps]
    drain_s = [r.drain["streamrec"] for r in reps]
    rows = [
        ("drain events/s", statistics.median(drain_f), statistics.median(drain_s)),
        ("ratio to floor", 1.0, statistics.median(ratio)),
    ]
    for q, name in ((50, "p50 ms"), (99, "p99 ms"), (99.9, "p99.9 ms")):
        f, st = pct("pass-through", q), pct("streamrec", q)
        rows.append(
            (
                name,
                statistics.median(f) if f else float("nan"),
                statistics.median(st) if st else float("nan"),
            )
        )
    for name, f, st in rows:
        print(f"{name:<18} {f:>12,.2f} {st:>12,.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bootstrap", default="", help="use this broker instead of starting one")
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--backlog", type=int, default=100_000, help="events drained flat out")
    ap.add_argument("--rate", type=float, default=1000.0, help="events/s of the fixed-rate phase")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the fixed-rate phase")
    ap.add_argument(
        "--linger-ms",
        type=int,
        default=5,
        help="the fixed-rate producer's linger (counted in the latency: events are stamped "
        "before it). With 0 every event is its own produce request: bench/harness.py measured "
        "the producer at 71%% of a core at 1,000/s with 0 and 28%% with 5, taken from the apps "
        "measured; runs before 2026-12-07 night used 0",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--retrieval", default="auto", choices=("auto", "exact", "hnsw"))
    ap.add_argument("--cache-mb", type=int, default=256)
    ap.add_argument("--batch-max", type=int, default=256)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument(
        "--batch-max-behind",
        type=int,
        default=2048,
        help="batch size while the worker is behind (recs.batch_max_behind; "
        "= --batch-max turns it off, the behaviour before 2026-12-06 evening)",
    )
    ap.add_argument(
        "--batch-wait-behind-ms",
        type=float,
        default=600.0,
        help="how long a batch waits to fill while records wait on the broker "
        "(recs.batch_wait_behind_ms; 200 before 2026-12-08, second session)",
    )
    ap.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=50,
        help="how long the broker may hold the worker's fetch (app.fetch_max_wait_ms; "
        "Faust's own 1,500 before 2026-12-08, second session)",
    )
    ap.add_argument(
        "--behind-wait-ms",
        type=float,
        default=10000.0,
        help="how long the merge waits for a topic known to be behind (ingest.behind_wait_ms)",
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="per drain, seconds")
    ap.add_argument("--out", default="var/bench/live")
    ap.add_argument(
        "--no-core",
        dest="core",
        action="store_false",
        help="skip the encoder and retrieval micro-benchmarks printed after the table",
    )
    ap.add_argument(
        "--no-merge-off",
        dest="merge_off",
        action="store_false",
        help="skip the drain with the event-time merge off",
    )
    ap.add_argument(
        "--no-reasons-off",
        dest="reasons_off",
        action="store_false",
        help="skip the drain with the reasons off (recs.explain = false)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also drain the backlog with this many workers in one consumer group",
    )
    ap.add_argument(
        "--no-ranker",
        dest="ranker",
        action="store_false",
        help="serve a checkpoint without the candidate ranker (the model's retrieval alone; "
        "runs before 2026-12-06 measured this)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the worker through the first repeat; prints where its time went",
    )
    ap.add_argument(
        "--plot",
        metavar="DIR",
        help="also draw the throughput and latency charts there (bench/plots.py)",
    )
    args = ap.parse_args()
    args.run = f"bench{int(time.time()) % 10**6}"
    out = (REPO / args.out / args.run).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")

    started = None
    if not args.bootstrap:
        started = out / "kafka"
        args.bootstrap = broker.start(broker.free_port(), broker.free_port(), started)
        log(f"broker started at {args.bootstrap}")
    try:
        base = load_settings(env={}).replace(kafka={"bootstrap_servers": args.bootstrap})
        items = make_items(args.items)
        write_model(items, out / "model", args.dim, ranker=args.ranker)
        base_env = settings_for(base, args, f"{args.run}r0", "setup", out)
        create_topics(base_env)
        _send_items(base_env, items)
        load = {
            "items": items,
            "users": args.users,
            "seed": 7,
            "rate": args.rate,
            "seconds": args.seconds,
            "linger_ms": args.linger_ms,
        }
        reps: list[Repeat] = []
        for r in tqdm(range(args.repeats), desc="repeats", file=sys.stderr):
            reps.append(one_repeat(ctx, base, args, load, r, out))
            rep = reps[-1]
            log(
                f"repeat {r + 1}: drain pass-through {rep.drain['pass-through']:,.0f}/s, streamrec "
                f"{rep.drain['streamrec']:,.0f}/s; p99 streamrec "
                f"{1e3 * float(np.percentile(rep.latency['streamrec'], 99)):.1f} ms"
            )
        report(reps, args)
        if args.core:
            core_costs(args)
        if args.profile and (out / "profile.txt").exists():
            print_profile(out / "profile.txt")
        results = {
            "args": {k: v for k, v in vars(args).items() if k != "plot"},
            "repeats": [vars(r) for r in reps],
        }
        (out / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_SERIALIZE_NUMPY))
        log(f"results in {out / 'results.json'}")
        if args.plot:
            from plots import live_charts

            for path in live_charts(
                orjson.loads((out / "results.json").read_bytes()), Path(args.plot)
            ):
                log(f"chart {path}")
    finally:
        if started is not None:
            broker.stop(started)
            shutil.rmtree(started, ignore_errors=True)
    return 0


def core_costs(args: argparse.Namespace) -> None:
    """The per-event costs behind the table, measured in this run: the incremental step vs a full
    re-encode (bench/encoder.py), the exact scan vs the graph at this catalog size
    (bench/retrieval.py), and the candidates + ranker per list (bench/ranker.py)."""
    for argv in (
        ["bench/encoder.py", "--repeats", "5"],
        ["bench/retrieval.py", "--sizes", str(args.items), "--users", "256", "--repeats", "5"],
        ["bench/ranker.py", "--items", str(args.items), "--users", "256", "--repeats", "5"],
    ):
        log(f"core costs: {' '.join(argv)}")
        done = subprocess.run(
            [sys.executable, *argv], cwd=REPO, capture_output=True, text=True, check=False
        )
        print(done.stdout.rstrip() or done.stderr[-2000:])


def print_profile(path: Path, top: int = 25) -> None:
    """Where the worker's samples went: inclusive share per function (py-spy raw stacks)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0] + ")" if " (" in f else f
            for f in stack.split(";")
        ]
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    if not total:
        return
    print(f"\nprofile of the worker, first repeat ({total:,} samples; {path}):")
    print("| function (file) | inclusive | self |")
    print("|---|---|---|")
    for f, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        print(f"| {f} | {100 * n / total:.1f}% | {100 * own.get(f, 0) / total:.1f}% |")


def _send_items(s: Settings, items: list[dict[str, Any]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(**s.kafka_client_config(), linger_ms=20, batch_size=512 * 1024)
    for it in tqdm(items, desc="catalog", file=sys.stderr, leave=False):
        producer.send(s.topics.items, key=it["item_id"].encode(), value=orjson.dumps(it))
    producer.flush()
    producer.close()


if __name__ == "__main__":
    sys.exit(main())
