"""`streamrec trainer` on the real broker, beside a real worker.

* Hot-swap under load: the trainer trains a first model from the topics, a worker serves it,
  and while events flow the trainer fine-tunes and publishes a second one; the worker picks it
  up between batches and every event gets its list, stamped with one of the two versions (the
  new one once the swap is done).
* The gate: a candidate fine-tuned on deliberately corrupted labels (the trainer reads them
  from the topics) is refused, the served checkpoint stays byte for byte what it was, and the
  trainer says so on /health and /metrics.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from encoders.checkpoint import load_checkpoint
from streamrec.continual.cycle import run_cycle
from streamrec.continual.window import TrainingWindow
from streamrec.events.schema import EVENT_TYPE_CODE
from streamrec.generate import GeneratorConfig, World, generate
from streamrec.kafka import broker
from streamrec.settings import Settings
from streamrec.training import items_by_id
from streamrec.wait import wait_until
from streamrec.worker_process import stop_process
from streams.topics import create_topics
from streams.worker import MODEL_POLL_S
from tests.integration.worker_proc import (
    WorkerProcess,
    make_settings,
    read_topic,
    send_events,
    send_items,
)

pytestmark = pytest.mark.broker

# The window spans the whole generated log (its timestamps are in the past) and no user's
# events are cut, so the test can compute the trainer's holdout cut itself.
WINDOW = {"window_s": 1e9, "window_users": 10_000, "window_user_events": 1_000}


@pytest.fixture(scope="module")
def world() -> World:
    return generate(GeneratorConfig(n_users=200, n_items=150, n_categories=6, days=10, seed=3))


def _settings(bootstrap: str, name: str, tmp: Path, **trainer: Any) -> Settings:
    s = make_settings(bootstrap, name, tmp, checkpoint=str(tmp / "model"))
    return s.replace(
        model={"threads": 1},
        trainer={"threads": 1, "nice": 0, "port": broker.free_port(), **WINDOW, **trainer},
    )


def _trainer(s: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - the child holds it; closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "streamrec", "trainer", *args],
        env={**os.environ, **s.to_env()},
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def _trainer_once(s: Settings, log: Path) -> tuple[int, str]:
    proc = _trainer(s, log, "--once")
    rc = proc.wait(timeout=600)
    return rc, log.read_text(errors="replace")[-4000:]


def test_a_model_published_while_events_flow_is_swapped_in_and_every_event_gets_a_list(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path, world: World
) -> None:
    s = _settings(
        kafka_bootstrap, unique_name("trswap"), tmp_path,
        first_epochs=4, epochs=1, tolerance=1.0, min_events=1,
    )  # fmt: skip
    create_topics(s)
    send_items(s, world.items)
    send_events(s, world.events)

    # a first model, trained from nothing on what the topics hold
    rc, out = _trainer_once(s, tmp_path / "trainer1.log")
    assert rc == 0, out
    first = load_checkpoint(tmp_path / "model")
    assert first.metadata["training"]["lineage"]["parent_version"] == "none"

    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    sent: list[dict[str, Any]] = []
    stop = threading.Event()
    items = [it["item_id"] for it in world.items]

    def flow() -> None:
        # one event per new user, so each event's list is the one stamped with its id
        n = 0
        while not stop.is_set():
            ev = {"event_id": f"flow{n}", "user_id": f"flow-user-{n}", "type": "click",
                  "item_id": items[n % len(items)], "ts": time.time()}  # fmt: skip
            send_events(s, [ev])
            sent.append(ev)
            n += 1
            time.sleep(0.05)

    flowing = threading.Thread(target=flow, name="flow", daemon=True)
    try:
        worker.wait_healthy()
        flowing.start()
        # the first model must serve some flow events before the second exists: the world's
        # backlog can take the worker longer than a fine-tune takes the trainer
        worker.wait_counter("events_accepted", len(world.events) + 10, timeout_s=120)
        rc, out = _trainer_once(s, tmp_path / "trainer2.log")
        assert rc == 0, out
        second = load_checkpoint(tmp_path / "model")
        lineage = second.metadata["training"]["lineage"]
        assert lineage["parent_version"] == first.model_version != second.model_version
        assert lineage["gate"]["candidate"]["cases"] > 0
        worker.wait_counter("model_loads", 1, timeout_s=6 * MODEL_POLL_S)
        swapped_at = len(sent)
        wait_until(lambda: len(sent) >= swapped_at + 20, timeout_s=60, what="events after swap")
        stop.set()
        flowing.join(timeout=10)

        wanted = {ev["event_id"] for ev in sent}
        records = read_topic(
            s,
            s.topics.recommendations,
            until=lambda rs: wanted <= {orjson.loads(r.value)["event_id"] for r in rs},
            timeout_s=120,
        )
    finally:
        stop.set()
        rc = worker.stop()
    assert rc == 0, worker.log_tail()
    lists = {}
    for r in records:
        rec = orjson.loads(r.value)
        if rec["event_id"] in wanted:
            lists[rec["event_id"]] = rec
    missing = wanted - set(lists)
    assert not missing, f"{len(missing)} events without a list, e.g. {sorted(missing)[:5]}"
    versions = [lists[ev["event_id"]]["model_version"] for ev in sent]
    assert set(versions) == {first.model_version, second.model_version}, set(versions)
    assert all(lists[ev["event_id"]]["source"] == "model" for ev in sent)
    # once the worker counted the load, every later event is served by the new model
    assert set(versions[swapped_at:]) == {second.model_version}


def _metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_a_candidate_trained_on_corrupted_labels_from_the_topics_is_never_served(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path, world: World
) -> None:
    s = _settings(
        kafka_bootstrap, unique_name("trgate"), tmp_path,
        first_epochs=6, epochs=3, lr=0.003, tolerance=0.02, min_events=1, interval_s=1.0,
    )  # fmt: skip
    events = sorted(world.events, key=lambda e: e["ts"])
    items = items_by_id(world.items)

    def window(evs: list[dict[str, Any]]) -> TrainingWindow:
        w = TrainingWindow(WINDOW["window_s"], WINDOW["window_users"], WINDOW["window_user_events"])
        for e in evs:
            w.add(e["user_id"], e["event_id"], e["item_id"], EVENT_TYPE_CODE[e["type"]], e["ts"])
        return w

    # the serving model: trained on the true log (the core cycle, no broker)
    good = run_cycle(window(events).split(0.1), items, s, tmp_path / "stage")
    assert good.published, good.reason
    served = (tmp_path / "model" / "model.json").read_bytes()

    # the topics carry the same log with every label before the holdout cut replaced by a
    # random item; the held-out events after it stay true
    cut = window(events).split(s.trainer.holdout_fraction).cut_ts
    rng = random.Random(0)
    catalog = sorted(items)
    corrupted = [e if e["ts"] >= cut else {**e, "item_id": rng.choice(catalog)} for e in events]
    create_topics(s)
    send_items(s, world.items)
    send_events(s, corrupted)

    port = s.trainer.port
    proc = _trainer(s, tmp_path / "trainer.log")
    try:

        def cycled() -> bool:
            assert proc.poll() is None, (tmp_path / "trainer.log").read_text()[-4000:]
            try:
                _, body = _get(port, "/metrics")
            except OSError:
                return False  # not listening yet
            done = [_metric(body.decode(), "streamrec_trainer_cycles_total", outcome=o)
                    for o in ("published", "rejected", "skipped", "failed")]  # fmt: skip
            return any(v for v in done)

        wait_until(cycled, timeout_s=600, what="a trainer cycle")
        code, health = _get(port, "/health")
        _, metrics = _get(port, "/metrics")
    finally:
        stop_process(proc)
    log = (tmp_path / "trainer.log").read_text(errors="replace")
    text = metrics.decode()
    assert _metric(text, "streamrec_trainer_cycles_total", outcome="rejected") == 1.0, log[-4000:]
    assert _metric(text, "streamrec_trainer_cycles_total", outcome="published") in (None, 0.0)
    candidate = _metric(text, "streamrec_trainer_gate_ndcg10", model="candidate")
    serving = _metric(text, "streamrec_trainer_gate_ndcg10", model="serving")
    assert candidate is not None and serving is not None and candidate < serving
    assert _metric(text, "streamrec_trainer_window_cut_ts") == pytest.approx(cut)
    assert (tmp_path / "model" / "model.json").read_bytes() == served
    body = json.loads(health)
    assert code == 200 and body["status"] == "ok", body
    assert body["serving_version"] == load_checkpoint(tmp_path / "model").model_version
    assert body["last_cycle"]["decision"]["accepted"] is False
    assert "rejected" in log
