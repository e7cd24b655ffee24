"""Run real `streamrec worker` processes against the test broker, and talk Kafka to them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from streamrec.faults.harness import make_settings as scenario_settings
from streamrec.kafka import broker
from streamrec.kafka.security import aiokafka_config
from streamrec.settings import Settings
from streamrec.worker_process import WorkerProcess as WorkerProcess  # re-exported for the tests

REPO = Path(__file__).resolve().parents[2]


def make_settings(
    bootstrap: str, name: str, tmp: Path, checkpoint: str = "", partitions: int = 2
) -> Settings:
    """Test-sized settings (the fault scenarios' own), optionally serving ``checkpoint``."""
    s = scenario_settings(bootstrap, name, tmp / "worker", partitions=partitions)
    return s.replace(model={"checkpoint": checkpoint})


def producer(s: Settings) -> KafkaProducer:
    return KafkaProducer(**s.kafka_client_config(), linger_ms=2)


def send_events(s: Settings, events: Iterable[dict[str, Any]]) -> int:
    p = producer(s)
    topics = s.topics.event_topics()
    n = 0
    for e in events:
        body = {k: v for k, v in e.items() if k != "type"}
        p.send(topics[e["type"]], key=str(e["user_id"]).encode(), value=orjson.dumps(body))
        n += 1
    p.flush()
    p.close()
    return n


def send_items(s: Settings, items: Iterable[dict[str, Any]]) -> None:
    p = producer(s)
    for it in items:
        p.send(s.topics.items, key=str(it["item_id"]).encode(), value=orjson.dumps(it))
    p.flush()
    p.close()


def read_topic(
    s: Settings, topic: str, until: Callable[[list[Any]], bool], timeout_s: float = 60
) -> list[Any]:
    """All records of ``topic`` from the beginning, until ``until(records)`` holds or time runs out."""
    c = KafkaConsumer(topic, **s.kafka_client_config(), group_id=None, auto_offset_reset="earliest")
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(out):
            for records in c.poll(timeout_ms=200).values():
                out.extend(records)
    finally:
        c.close()
    return out


def console_consume(
    s: Settings, topic: str, max_records: int, idle_ms: int = 10_000
) -> list[tuple[str, str | None]]:
    """``topic`` from the beginning as Kafka's own Java console consumer reads it (an independent
    client: no Python Kafka library involved), up to ``max_records`` records or ``idle_ms``
    without one: (key, value or None for a tombstone)."""
    import os
    import subprocess

    script = str(REPO / "deploy/kafka/broker.sh")
    proc = subprocess.run(
        ["bash", script, "consume", s.kafka.bootstrap_servers, topic, str(max_records)],
        env={**os.environ, "STREAMREC_CONSUME_IDLE_MS": str(idle_ms)},
        capture_output=True,
        encoding="utf-8",
        errors="replace",  # a changelog's values are binary
        timeout=120,
        check=True,
    )
    out: list[tuple[str, str | None]] = []
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("\t")
        out.append((key, None if value == "null" else value))
    return out


def own_broker(run_dir: Path, env: dict[str, str], extra_ports: int = 1) -> tuple[str, list[int]]:
    """Start a broker of a test module's own (``broker.sh`` with ``env``: extra listeners) on
    free ports; returns its PLAINTEXT address and ``extra_ports`` more free ports, which ``env``
    may name as ``{0}``, ``{1}``... Stop it with ``broker.stop(run_dir)``."""
    ports: set[int] = set()
    while len(ports) < 2 + extra_ports:
        ports.add(broker.free_port())
    port, controller_port, *extra = sorted(ports)
    with pytest.MonkeyPatch.context() as mp:  # broker.start passes its environment to the script
        for name, value in env.items():
            mp.setenv(name, value.format(*extra))
        try:
            return broker.start(port=port, controller_port=controller_port, run_dir=run_dir), extra
        except BaseException:
            with contextlib.suppress(broker.BrokerError):
                broker.stop(run_dir)
            raise


def admin_topics(s: Settings) -> list[str]:
    """The topics, through kafka-python's admin client with ``s``'s security settings."""
    client = KafkaAdminClient(
        **s.kafka_client_config(), request_timeout_ms=5000, bootstrap_timeout_ms=5000
    )
    try:
        return list(client.list_topics())
    finally:
        client.close()


async def aio_produce(s: Settings) -> None:
    """One record to the DLQ topic through aiokafka, as the worker's clients connect."""
    p = AIOKafkaProducer(**aiokafka_config(s.kafka), request_timeout_ms=5000)
    try:
        await p.start()
        await p.send_and_wait(s.topics.dlq, b"probe", key=b"k")
    finally:
        await p.stop()


def latest_by_key(records: Iterable[Any]) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    for r in records:
        out[r.key] = r.value
    return out


# -- small hand-built models and process probes (checkpoint, fuzz and TLS tests) ------------------

TINY_CATALOG: list[dict[str, Any]] = [
    {
        "item_id": f"i{n}",
        "category": ("books", "games", "music")[n % 3],
        "price": 5.0 + 3 * n,
        "title": f"item number {n}",
        "available": True,
    }
    for n in range(12)
]


def write_tiny_checkpoint(directory: Path, version: str, seed: int = 0) -> Path:
    """Save a small random model over ``TINY_CATALOG`` as a real checkpoint (safetensors + JSON):
    cheap enough to build per test, and served by the worker like a trained one."""
    from encoders.checkpoint import TrainedModel, save_checkpoint
    from encoders.item_features import ItemFeaturizer
    from encoders.model import EncoderConfig
    from tests.encoders.helpers import random_model

    records = [{k: v for k, v in it.items() if k != "item_id"} for it in TINY_CATALOG]
    fz = ItemFeaturizer.fit(records, n_price_buckets=8, title_buckets=64)
    vocab = [it["item_id"] for it in TINY_CATALOG]
    cfg = EncoderConfig(
        d_model=16,
        n_layers=2,
        n_heads=2,
        window=4,
        n_item_ids=len(vocab) + 1,
        n_categories=fz.n_categories,
        n_price_buckets=8,
        title_buckets=64,
    )
    trained = TrainedModel(
        model=random_model(cfg, seed=seed),
        config=cfg,
        item_ids=vocab,
        featurizer=fz,
        vocab_features=fz.encode([{}, *records], range(len(vocab) + 1)),
        model_version=version,
    )
    return save_checkpoint(directory, trained)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
