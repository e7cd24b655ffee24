"""Corrupt model checkpoints and a real worker process on the real broker.

* A worker whose configured checkpoint is corrupt refuses to start, with the reason (serving
  popularity instead would hide a broken deployment; with no ``model.json`` at all it does serve
  popularity, by design).
* A live worker handed a corrupt, a truncated or a pickled checkpoint keeps serving the model it
  has; a valid one is then picked up (so the poll under test does work).
"""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from encoders.checkpoint import META_FILE, WEIGHTS_FILE, sha256_file
from streams.topics import create_topics
from streams.worker import MODEL_POLL_S
from tests.integration.worker_proc import (
    TINY_CATALOG,
    WorkerProcess,
    make_settings,
    read_topic,
    send_events,
    send_items,
    write_tiny_checkpoint,
)

pytestmark = pytest.mark.broker


class _Planted:
    """Unpickling this creates ``marker``: evidence that the worker ran pickle on the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _set_hash(ckpt: Path, version: str | None = None) -> None:
    """Make model.json agree with whatever tensor file lies there now (and name a new version),
    so only the checks behind the hash can refuse it; bumps the mtime the worker polls."""
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["weights_sha256"] = sha256_file(ckpt / WEIGHTS_FILE)
    if version is not None:
        meta["model_version"] = version
    (ckpt / META_FILE).write_text(json.dumps(meta))
    t = time.time()
    os.utime(ckpt / META_FILE, (t, t))


def test_a_worker_with_a_corrupt_checkpoint_refuses_to_start(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    ckpt = write_tiny_checkpoint(tmp_path / "model", "v1")
    data = (ckpt / WEIGHTS_FILE).read_bytes()
    (ckpt / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])  # truncated copy
    s = make_settings(kafka_bootstrap, unique_name("ckbad"), tmp_path, checkpoint=str(ckpt))
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    assert worker.proc is not None
    try:
        rc = worker.proc.wait(timeout=120)
    finally:
        worker.stop()
    log = worker.log_tail(200)
    assert rc == 2, log
    assert "refusing to start" in log and str(ckpt) in log, log
    assert "sha256" in log and "corrupt, truncated" in log, log  # the cause, named
    assert "Traceback" not in log, log


def _list_for(s: Any, user: str, event_id: str) -> dict[str, Any]:
    """The list the worker published for ``user`` after ``event_id``."""
    records = read_topic(
        s,
        s.topics.recommendations,
        until=lambda rs: any(orjson.loads(r.value)["event_id"] == event_id for r in rs),
        timeout_s=60,
    )
    found = [orjson.loads(r.value) for r in records if r.key == user.encode()]
    found = [rec for rec in found if rec["event_id"] == event_id]
    assert found, f"no list for {user} after {event_id}"
    return found[-1]


def test_a_live_worker_keeps_its_model_when_handed_corrupt_checkpoints(
    kafka_bootstrap: str, unique_name: Any, tmp_path: Path
) -> None:
    ckpt = write_tiny_checkpoint(tmp_path / "model", "v1", seed=1)
    good_weights = (ckpt / WEIGHTS_FILE).read_bytes()
    s = make_settings(kafka_bootstrap, unique_name("ckhot"), tmp_path, checkpoint=str(ckpt))
    create_topics(s)
    send_items(s, TINY_CATALOG)
    marker = tmp_path / "unpickled"
    n = 0

    def event_and_list() -> dict[str, Any]:
        nonlocal n
        n += 1
        ev = {
            "event_id": f"ev{n}",
            "user_id": "hot-user",
            "item_id": TINY_CATALOG[n % len(TINY_CATALOG)]["item_id"],
            "type": "click",
            "ts": time.time() - 60 + n,
        }
        send_events(s, [ev])
        return _list_for(s, "hot-user", ev["event_id"])

    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        worker.wait_healthy()
        first = event_and_list()
        assert (first["source"], first["model_version"]) == ("model", "v1")

        failures = 0
        corruptions = [
            # a truncated tensor file (the hash in model.json no longer matches)
            lambda: (ckpt / WEIGHTS_FILE).write_bytes(good_weights[: len(good_weights) // 3]),
            # a pickle in place of the tensors, its hash written into model.json
            lambda: (ckpt / WEIGHTS_FILE).write_bytes(pickle.dumps({"w": _Planted(marker)})),
            # valid tensors, but a config they do not fit (another architecture)
            lambda: _wrong_config(ckpt, good_weights),
        ]
        for corrupt in corruptions:
            corrupt()
            _set_hash(ckpt, version="v2-broken")
            failures += 1
            worker.wait_counter("model_load_failures", failures, timeout_s=4 * MODEL_POLL_S)
            failures = worker.counters()["model_load_failures"]  # it retries every poll
            still = event_and_list()
            assert (still["source"], still["model_version"]) == ("model", "v1"), worker.log_tail()
            assert worker.proc is not None and worker.proc.poll() is None
        assert "refusing new checkpoint, still serving v1" in worker.log_tail(400)
        assert not marker.exists(), "the worker unpickled a planted file"
        assert worker.counters().get("model_loads", 0) == 0

        # a valid checkpoint is then served: the poll being tested above does load models
        write_tiny_checkpoint(ckpt, "v3", seed=3)
        worker.wait_counter("model_loads", 1, timeout_s=4 * MODEL_POLL_S)
        after = event_and_list()
        assert (after["source"], after["model_version"]) == ("model", "v3")
    finally:
        rc = worker.stop()
    assert rc == 0, worker.log_tail()


def _wrong_config(ckpt: Path, good_weights: bytes) -> None:
    (ckpt / WEIGHTS_FILE).write_bytes(good_weights)
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["config"]["n_layers"] = 3
    (ckpt / META_FILE).write_text(json.dumps(meta))
