"""Run real `streamrec worker` processes against the test broker, and talk Kafka to them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer

from streamrec.kafka.broker import free_port
from streamrec.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def make_settings(
    bootstrap: str, name: str, tmp: Path, checkpoint: str = "", partitions: int = 2
) -> Settings:
    base = load_settings(env={})
    return base.replace(
        kafka={"bootstrap_servers": bootstrap},
        topics={
            "browse": f"{name}.browse",
            "click": f"{name}.click",
            "purchase": f"{name}.purchase",
            "items": f"{name}.items",
            "recommendations": f"{name}.recommendations",
            "dlq": f"{name}.dlq",
            "partitions": partitions,
        },
        app={
            "id": name,
            "datadir": str(tmp / "worker"),
            "web_port": free_port(),
            "commit_interval_s": 0.5,
            "session_timeout_s": 6.0,
        },
        model={"checkpoint": checkpoint, "cache_mb": 16},
        recs={"k": 10, "batch_wait_ms": 2.0},
    )


class WorkerProcess:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.settings.to_env()}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec", "worker"],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def get(self, path: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.settings.app.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, orjson.loads(e.read() or b"null")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, None

    def wait_healthy(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if self.get("/health/")[0] == 200:
                return
            time.sleep(0.3)
        raise AssertionError(f"worker not healthy after {timeout_s} s:\n{self.log_tail()}")

    def counters(self) -> dict[str, int]:
        status, body = self.get("/health/")
        return dict(body["metrics"]["counters"]) if status == 200 else {}

    def wait_counter(self, name: str, at_least: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.counters().get(name, 0) >= at_least:
                return
            time.sleep(0.2)
        raise AssertionError(
            f"{name} < {at_least} after {timeout_s} s: {self.counters()}\n{self.log_tail()}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


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
