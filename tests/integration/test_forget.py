"""Forgetting a user on the real broker: `streamrec forget` removes them from every topic the
workers write (once Kafka has compacted it), a restart or a changelog rebuild does not bring them
back, and their next event starts a new history."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from streamrec.kafka.read import read_to_end
from streams.topics import changelog_topic, create_topics, topic_specs
from tests.integration.worker_proc import (
    REPO,
    WorkerProcess,
    console_consume,
    make_settings,
    read_topic,
    send_events,
)

pytestmark = pytest.mark.broker

# Compaction within seconds instead of hours: small segments, no dirty-ratio wait, so the test
# can watch Kafka drop what the tombstones supersede (the broker's cleaner wakes every 15 s).
FAST_COMPACTION = {
    "cleanup.policy": "compact",
    "segment.ms": "300",
    "min.cleanable.dirty.ratio": "0.001",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "3600000",
}
VICTIM = "forget-me"


def _events(user: str, prefix: str, n: int, t0: float) -> list[dict]:
    return [
        {
            "event_id": f"{prefix}-{k}",
            "user_id": user,
            "item_id": f"i{k % 7}",
            "type": ("browse", "click", "purchase")[k % 3],
            "ts": t0 + k,
        }
        for k in range(n)
    ]


def _mentions(records, user: str, event_ids: set[str]) -> list:
    """Records that carry the user's data: keyed by them with a value, or naming their events."""
    out = []
    for key, value in records:
        if value is None:
            continue
        if (user and key == user) or any(f'"{e}"' in value for e in event_ids):
            out.append((key, value[:200]))
    return out


def test_a_forgotten_user_is_gone_from_every_topic_and_stays_gone(
    kafka_bootstrap, unique_name, tmp_path
):
    s = make_settings(kafka_bootstrap, unique_name("forget"), tmp_path)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        compacted = [s.topics.recommendations, changelog_topic(s)]
        admin.create_topics(
            [NewTopic(t, s.topics.partitions, 1, topic_configs=FAST_COMPACTION) for t in compacted]
        )
    finally:
        admin.close()
    create_topics(s)
    owned = [t for t in topic_specs(s) if t not in s.topics.event_topics().values()]
    t0 = time.time() - 600
    victim = _events(VICTIM, "v", 12, t0)
    victim_ids = {e["event_id"] for e in victim}
    others = [_events(f"other-{u}", f"o{u}", 6, t0) for u in range(4)]

    worker = WorkerProcess(s, tmp_path / "a.log").start()
    try:
        worker.wait_healthy()
        send_events(s, [e for batch in others for e in batch] + victim)
        worker.wait_counter("events_accepted", 12 + 4 * 6)
        status, body = worker.get(f"/users/{VICTIM}/")
        assert status == 200 and body["events"] == 12

        env = {**os.environ, **s.to_env()}
        out = subprocess.run(
            [sys.executable, "-m", "streamrec", "forget", VICTIM],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert "asked to forget 1 user(s)" in out.stdout
        worker.wait_counter("users_forgotten", 1)
        status, _ = worker.get(f"/users/{VICTIM}/")
        assert status == 404

        # the latest list of the user is a tombstone, after their lists
        recs = read_topic(
            s,
            s.topics.recommendations,
            until=lambda rs: any(r.key == VICTIM.encode() and r.value is None for r in rs),
        )
        mine = [r for r in recs if r.key == VICTIM.encode()]
        assert mine and mine[-1].value is None and any(r.value is not None for r in mine[:-1])

        # Kafka compacts away what the tombstones supersede; meanwhile other users' events keep
        # the segments rolling. The forget topic keeps the request itself (keyed by the user,
        # no events of theirs) until its retention.
        def left_behind(read) -> dict[str, list]:
            found = {
                t: _mentions(read(t), VICTIM if t != s.topics.forget else "", victim_ids)
                for t in owned
            }
            return {t: v for t, v in found.items() if v}

        def python_read(topic: str) -> list:
            return [
                (k.decode() if k else k, v.decode(errors="replace") if v is not None else None)
                for k, v in read_to_end(s.kafka_client_config(), topic, timeout_s=30)
            ]

        deadline = time.monotonic() + 150
        filler = 0
        while left := left_behind(python_read):
            assert time.monotonic() < deadline, left
            send_events(s, _events(f"filler-{filler}", f"f{filler}", 1, time.time() - 5))
            filler += 1
            time.sleep(2)
        # and as an independent client reads them: Kafka's own console consumer
        as_read = {t: console_consume(s, t, 1_000_000, idle_ms=3000) for t in owned}
        assert not left_behind(as_read.__getitem__)
        tombstones = [k for t in compacted for k, v in as_read[t] if k == VICTIM]
        assert len(tombstones) == 2, tombstones  # one on the lists, one on the changelog
    finally:
        assert worker.stop() == 0

    def no_list_resurrected() -> None:
        recs = read_topic(s, s.topics.recommendations, until=lambda rs: False, timeout_s=3)
        mine = [r for r in recs if r.key == VICTIM.encode()]
        assert mine and mine[-1].value is None, "the forgotten user's list came back"

    # a restart on the same local state, then a rebuild of the tables from the changelog
    for name, datadir in (("b", s.app.datadir), ("c", str(tmp_path / "fresh"))):
        again = s.replace(app={"datadir": datadir})
        w = WorkerProcess(again, tmp_path / f"{name}.log").start()
        try:
            w.wait_healthy()
            status, _ = w.get(f"/users/{VICTIM}/")
            assert status == 404, (name, w.log_tail())
            no_list_resurrected()
            if name == "c":
                # a new event starts a new, empty history
                send_events(s, _events(VICTIM, "new", 1, time.time() - 1))
                w.wait_counter("events_accepted", 1)
                status, body = w.get(f"/users/{VICTIM}/")
                assert status == 200 and body["events"] == 1
                recs = read_topic(
                    s,
                    s.topics.recommendations,
                    until=lambda rs: any(
                        r.key == VICTIM.encode()
                        and r.value is not None
                        and orjson.loads(r.value)["event_id"] == "new-0"
                        for r in rs
                    ),
                )
                latest = [r for r in recs if r.key == VICTIM.encode()][-1]
                assert orjson.loads(latest.value)["event_id"] == "new-0"
        finally:
            assert w.stop() == 0


def test_a_forget_request_without_a_key_is_dead_lettered(kafka_bootstrap, unique_name, tmp_path):
    s = make_settings(kafka_bootstrap, unique_name("forgetdlq"), tmp_path)
    create_topics(s)
    worker = WorkerProcess(s, tmp_path / "w.log").start()
    try:
        worker.wait_healthy()
        from tests.integration.worker_proc import producer

        p = producer(s)
        p.send(s.topics.forget, key=None, value=b"{}")
        p.flush()
        p.close()
        dlq = read_topic(s, s.topics.dlq, until=lambda rs: len(rs) >= 1)
        headers = dict(dlq[0].headers)
        assert headers["dlq.error"] == b"missing_key"
        assert headers["dlq.topic"] == s.topics.forget.encode()
        assert worker.get("/live/")[0] == 200
    finally:
        assert worker.stop() == 0
