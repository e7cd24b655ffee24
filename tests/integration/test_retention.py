"""Retention on the real broker: the sweep forgets users idle past ``features.retention_days``
(wall clock), through a conditional request on the forget topic that the worker re-checks, and
keeps users who are active."""

from __future__ import annotations

import time

import orjson
import pytest

from streams.topics import create_topics
from tests.integration.worker_proc import (
    WorkerProcess,
    make_settings,
    producer,
    read_topic,
    send_events,
)

pytestmark = pytest.mark.broker

RETENTION_S = 120.0  # the active user must not age past it while the test runs


def _events(user: str, n: int, t0: float) -> list[dict]:
    return [
        {"event_id": f"{user}-{t0:.0f}-{k}", "user_id": user, "item_id": f"i{k % 5}",
         "type": "click", "ts": t0 + k}
        for k in range(n)
    ]  # fmt: skip


def test_the_sweep_forgets_idle_users_and_keeps_active_ones(kafka_bootstrap, unique_name, tmp_path):
    s = make_settings(kafka_bootstrap, unique_name("retention"), tmp_path)
    s = s.replace(features={"retention_days": RETENTION_S / 86400, "retention_sweep_s": 1.0})
    create_topics(s)
    worker = WorkerProcess(s, tmp_path / "w.log").start()
    try:
        worker.wait_healthy()
        now = time.time()
        # idle: newest event ten minutes ago; active: events from seconds ago, and more to come
        send_events(s, _events("idle", 4, now - 600) + _events("active", 4, now - 5))
        worker.wait_counter("users_expired", 1)
        assert worker.get("/users/idle/")[0] == 404
        status, body = worker.get("/users/active/")
        assert status == 200 and body["events"] == 4
        recs = read_topic(
            s,
            s.topics.recommendations,
            until=lambda rs: any(r.key == b"idle" and r.value is None for r in rs),
        )
        mine = [r for r in recs if r.key == b"idle"]
        assert mine[-1].value is None and any(r.value is not None for r in mine[:-1])
        requests = read_topic(s, s.topics.forget, until=lambda rs: len(rs) >= 1)
        assert {r.key for r in requests} == {b"idle"}
        assert orjson.loads(requests[0].value)["reason"] == "retention"

        # A request that arrives after the user came back is not carried out (the worker checks
        # their newest event again when it reads the request), and a malformed one is dead-lettered.
        p = producer(s)
        p.send(s.topics.forget, key=b"active", value=orjson.dumps({"idle_before": now - 30}))
        p.send(s.topics.forget, key=b"active", value=b'{"idle_before": "soon"}')
        p.flush()
        p.close()
        worker.wait_counter("retention_kept", 1)
        dlq = read_topic(s, s.topics.dlq, until=lambda rs: len(rs) >= 1)
        assert dict(dlq[0].headers)["dlq.error"] == b"bad_timestamp"
        status, body = worker.get("/users/active/")
        assert status == 200 and body["events"] == 4
        assert worker.counters().get("users_expired") == 1
        assert worker.get("/live/")[0] == 200
    finally:
        assert worker.stop() == 0
