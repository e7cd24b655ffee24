"""Replay throughput against a real broker, side by side with the raw client:

  kafka-python send             pre-serialized (topic, key, value) bytes: the client's ceiling
  ... with cached partitioner   the same, with the partitioner replay uses
  replay()                      the same events as dicts through streamrec.replay.replay
  streamrec replay              end to end: read and order the public file, then replay()

Run:  .venv/bin/python bench/replay.py --bootstrap 127.0.0.1:19092 [trivago] [--repeats 5]
Each repeat publishes the dataset once (after one warm-up) to topics made for this run (deleted
at the end unless --keep-topics), with the producer already connected, and is timed until
everything is acknowledged. Prints events/s as median (min-max) over the repeats and the ratio to
the raw client; the machine is shared and noisy. All rows use the same producer settings
(streamrec.replay.PRODUCER_DEFAULTS and the tuning flags).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from streamrec.datasets import DATASETS
from streamrec.kafka.partitioner import CachedKeyPartitioner
from streamrec.replay import PRODUCER_DEFAULTS, replay
from streamrec.replay_sources import open_source

Row = tuple[str, list[float]]  # label, events/s per repeat


def warm_producer(config: Mapping[str, Any], topics: list[str]) -> KafkaProducer:
    """A producer whose connection and topic metadata exist, so timing starts at the first send."""
    producer = KafkaProducer(**config)
    for topic in topics:
        producer.partitions_for(topic)
    return producer


def raw_send(config: dict[str, Any], records: list[tuple[str, bytes, bytes]]) -> float:
    producer = warm_producer(config, sorted({t for t, _, _ in records}))
    try:
        started = time.perf_counter()
        for topic, key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush()
        return len(records) / (time.perf_counter() - started)
    finally:
        producer.close()


def replay_factory(
    tuning: Mapping[str, Any], topics: list[str]
) -> Callable[[Mapping[str, Any]], KafkaProducer]:
    """What replay() builds by default (its config plus the caching partitioner), warmed."""

    def factory(config: Mapping[str, Any]) -> KafkaProducer:
        return warm_producer({"partitioner": CachedKeyPartitioner(), **config, **tuning}, topics)

    return factory


def via_replay(
    tuning: dict[str, Any], topic_of: dict[str, str], events: list[dict[str, Any]]
) -> float:
    factory = replay_factory(tuning, list(topic_of.values()))
    summary = replay(events, {}, topic_of, progress=False, producer_factory=factory)
    return summary.events_per_s


def end_to_end(tuning: dict[str, Any], topic_of: dict[str, str], args: argparse.Namespace) -> float:
    factory = replay_factory(tuning, list(topic_of.values()))
    started = time.perf_counter()
    events, total = open_source(args.dataset, args.format, root=args.data_root).events(
        args.order, args.limit
    )
    summary = replay(events, {}, topic_of, total=total, progress=False, producer_factory=factory)
    return summary.events_sent / (time.perf_counter() - started)


def measure(fn: Callable[[], float], repeats: int) -> list[float]:
    fn()  # warm-up: the broker's first segment files, the client's first batches
    return [fn() for _ in range(repeats)]


def table(rows: list[Row]) -> str:
    base = statistics.median(rows[0][1])
    cells = [("", "events/s", "(min-max)", "vs raw")]
    for label, rates in rows:
        med = statistics.median(rates)
        cells.append(
            (label, f"{med:,.0f}", f"({min(rates):,.0f}-{max(rates):,.0f})", f"{med / base:.2f}")
        )
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:>{widths[1]}} {c:<{widths[2]}}  {d:>{widths[3]}}"
        for a, b, c, d in cells
    )


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("dataset", nargs="?", default="trivago", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--bootstrap", required=True, help="host:port of the broker to publish to")
    p.add_argument("--format", help="for a file instead of a dataset name")
    p.add_argument("--data-root", help="overrides data.root")
    p.add_argument("--order", choices=("time", "file"), default=None)
    p.add_argument("--limit", type=int, default=None, help="only the first N events")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--partitions", type=int, default=4, help="of each bench topic")
    p.add_argument(
        "--compression", choices=("none", "gzip", "lz4", "zstd", "snappy"), default="none"
    )
    p.add_argument(
        "--linger-ms", type=int, default=None, help=f"default {PRODUCER_DEFAULTS['linger_ms']}"
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help=f"default {PRODUCER_DEFAULTS['batch_size']}"
    )
    p.add_argument("--keep-topics", action="store_true")
    args = p.parse_args()

    events, _ = open_source(args.dataset, args.format, root=args.data_root).events(
        args.order, args.limit
    )
    prepared = list(events)
    prefix = f"bench.replay.{uuid.uuid4().hex[:8]}"
    topic_of = {t: f"{prefix}.{t}" for t in ("browse", "click", "purchase")}
    records = [(topic_of[e["type"]], e["user_id"].encode(), orjson.dumps(e)) for e in prepared]
    tuning: dict[str, Any] = {"bootstrap_servers": args.bootstrap}
    if args.compression != "none":
        tuning["compression_type"] = args.compression
    if args.linger_ms is not None:
        tuning["linger_ms"] = args.linger_ms
    if args.batch_size is not None:
        tuning["batch_size"] = args.batch_size
    raw_config = {**PRODUCER_DEFAULTS, **tuning}

    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, client_id="bench-replay")
    admin.create_topics(
        [
            NewTopic(t, num_partitions=args.partitions, replication_factor=1)
            for t in topic_of.values()
        ]
    )
    try:
        print(
            f"{args.dataset}: {len(prepared):,} events, {args.partitions} partitions per topic, "
            f"compression {args.compression}, {args.repeats} repeats"
        )
        rows: list[Row] = [
            (
                "kafka-python send, bytes",
                measure(lambda: raw_send(raw_config, records), args.repeats),
            ),
            (
                "kafka-python send, bytes, cached partitioner",
                measure(
                    lambda: raw_send(
                        {**raw_config, "partitioner": CachedKeyPartitioner()}, records
                    ),
                    args.repeats,
                ),
            ),
            (
                "replay(), dicts in memory",
                measure(lambda: via_replay(tuning, topic_of, prepared), args.repeats),
            ),
            (
                "streamrec replay, from the file",
                measure(lambda: end_to_end(tuning, topic_of, args), args.repeats),
            ),
        ]
        print(table(rows))
    finally:
        if not args.keep_topics:
            admin.delete_topics(list(topic_of.values()))
        admin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
