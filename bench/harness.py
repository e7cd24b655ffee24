"""What the load generator and the list reader of the demo and bench/live.py cost, on the machine
that also runs the broker and the worker they measure (2 cores here).

Side by side, on one broker and one topic:
  - a paced producer (kafka-python, events stamped just before each send, as bench/live.py's and
    `streamrec replay --rate`'s) at each rate, lingering 0 ms (every event its own produce
    request) vs 5 ms -> CPU of the producer process (share of one core) and the latency from the
    stamp to the record being read back (p50 / p99), which the linger adds to;
  - an idle reader of a topic (kafka-python consumer, nothing arriving) with a 5 ms fetch wait vs
    the client default (500 ms) -> its CPU, and with records arriving the same latency: the broker
    answers a fetch as soon as one record is there, so the wait only matters when idle.

Run:  .venv/bin/python bench/harness.py [--rates 400,1000] [--seconds 5] [--repeats 3]
      (--bootstrap HOST:PORT uses a running broker; otherwise one is started and stopped)
Prints median (min-max) over repeats; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from tqdm import tqdm

from streamrec.kafka import broker

PARTITIONS = 4


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _reader(bootstrap: str, topic: str, fetch_wait_ms: int | None) -> KafkaConsumer:
    extra: dict[str, Any] = {} if fetch_wait_ms is None else {"fetch_max_wait_ms": fetch_wait_ms}
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, **extra)
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    c.assign(parts)
    c.seek_to_end(*parts)
    for p in parts:
        c.position(p)  # resolve now: records from here on are this cell's
    return c


def paced(
    bootstrap: str, topic: str, rate: float, seconds: float, linger_ms: int, fetch_wait_ms: int
) -> tuple[float, float, float]:
    """(producer CPU as a share of one core, p50 ms, p99 ms stamp -> read back). Two passes: the
    CPU with no reader in this process (a thread's CPU cannot be told apart portably), then the
    latency with a reader polling here."""
    n = int(rate * seconds)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms, acks=1)
    producer.send(topic, b"warm").get(timeout=30)
    c0, t0 = _cpu_s(), time.perf_counter()
    for i in range(n):
        ahead = t0 + i / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        producer.send(topic, key=str(i % 1000).encode(), value=orjson.dumps({"ts": time.time()}))
    producer.flush()
    cpu = (_cpu_s() - c0) / (time.perf_counter() - t0)

    # second pass, with a reader: the latency the linger (and the reader's wait) adds
    reader = _reader(bootstrap, topic, fetch_wait_ms)
    lat: list[float] = []
    sent = threading.Event()

    def send() -> None:
        t1 = time.perf_counter()
        for i in range(n):
            ahead = t1 + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            producer.send(topic, key=str(i).encode(), value=orjson.dumps({"ts": time.time()}))
        producer.flush()
        sent.set()

    th = threading.Thread(target=send, daemon=True)
    th.start()
    deadline = time.monotonic() + seconds + 30
    while len(lat) < n and time.monotonic() < deadline:
        for records in reader.poll(timeout_ms=100).values():
            now = time.time()
            lat.extend((now - orjson.loads(r.value)["ts"]) * 1e3 for r in records)
    th.join()
    reader.close()
    producer.close()
    a = np.array(lat)
    return cpu, float(np.percentile(a, 50)), float(np.percentile(a, 99))


def idle(bootstrap: str, topic: str, fetch_wait_ms: int | None, seconds: float) -> float:
    """CPU (share of one core) of a reader polling a topic nothing arrives on."""
    reader = _reader(bootstrap, topic, fetch_wait_ms)
    reader.poll(timeout_ms=100)
    c0, t0 = _cpu_s(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        reader.poll(timeout_ms=100)
    cpu = (_cpu_s() - c0) / (time.perf_counter() - t0)
    reader.close()
    return cpu


def _fmt(values: list[float], spec: str) -> str:
    med = statistics.median(values)
    return f"{med:{spec}} ({min(values):{spec}}–{max(values):{spec}})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="", help="use this broker instead of starting one")
    ap.add_argument("--rates", default="400,1000", help="events/s of the paced producer")
    ap.add_argument("--seconds", type=float, default=5.0, help="per pass")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]

    started: Path | None = None
    if not args.bootstrap:
        started = Path(tempfile.mkdtemp(prefix="bench-harness-"))
        args.bootstrap = broker.start(broker.free_port(), broker.free_port(), started)
    try:
        topic = f"bench-harness-{int(time.time())}"
        admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        quiet = topic + "-idle"
        admin.create_topics([NewTopic(quiet, PARTITIONS, 1)])
        admin.close()

        cells = [(rate, linger) for rate in rates for linger in (0, 5)]
        prod: dict[tuple[float, int], list[tuple[float, float, float]]] = {c: [] for c in cells}
        readers: dict[int | None, list[float]] = {5: [], None: []}
        lat_by_wait: dict[int | None, list[tuple[float, float]]] = {5: [], None: []}
        steps = args.repeats * (len(cells) + 4)
        with tqdm(total=steps, desc="harness", file=sys.stderr) as bar:
            for _ in range(args.repeats):
                for rate, linger in cells:
                    prod[(rate, linger)].append(
                        paced(args.bootstrap, topic, rate, args.seconds, linger, 500)
                    )
                    bar.update()
                for wait in (5, None):
                    readers[wait].append(idle(args.bootstrap, quiet, wait, args.seconds))
                    bar.update()
                    _, p50, p99 = paced(
                        args.bootstrap, topic, rates[0], args.seconds, 0, wait or 500
                    )
                    lat_by_wait[wait].append((p50, p99))
                    bar.update()
    finally:
        if started is not None:
            broker.stop(started)

    print(
        f"\npaced producer (kafka-python, acks=1), median (min-max) of {args.repeats}, "
        f"{args.seconds:g} s per cell; CPU as a share of one core"
    )
    print("| rate | linger ms | producer CPU | vs linger 0 | p50 ms | p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for rate, linger in cells:
        rows = prod[(rate, linger)]
        cpu = [r[0] * 100 for r in rows]
        base = statistics.median(r[0] for r in prod[(rate, 0)])
        print(
            f"| {rate:,.0f}/s | {linger} | {_fmt(cpu, '.0f')}% | "
            f"{statistics.median(r[0] for r in rows) / base:.2f}× | "
            f"{_fmt([r[1] for r in rows], '.1f')} | {_fmt([r[2] for r in rows], '.1f')} |"
        )
    print(f"\nreader of a topic (kafka-python consumer); latency at {rates[0]:,.0f}/s, linger 0")
    print("| fetch wait | idle CPU | vs 5 ms | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    base_idle = statistics.median(readers[5])
    for wait in (5, None):
        label = "5 ms" if wait else "default (500 ms)"
        cpu = [v * 100 for v in readers[wait]]
        print(
            f"| {label} | {_fmt(cpu, '.0f')}% | {statistics.median(readers[wait]) / base_idle:.2f}× | "
            f"{_fmt([x[0] for x in lat_by_wait[wait]], '.1f')} | "
            f"{_fmt([x[1] for x in lat_by_wait[wait]], '.1f')} |"
        )


if __name__ == "__main__":
    main()
