"""The operator's commands end to end: topics create, replay, worker, recs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import orjson
import pytest

from streamrec.eventlog import write_events, write_items
from streamrec.generate import GeneratorConfig, generate
from tests.integration.worker_proc import (
    REPO,
    WorkerProcess,
    make_settings,
    read_topic,
)

pytestmark = pytest.mark.broker


def cli(s, *args, timeout=120):
    env = {**os.environ, **s.to_env()}
    return subprocess.run(
        [sys.executable, "-m", "streamrec", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_topics_replay_worker_and_recs(kafka_bootstrap, unique_name, tmp_path):
    s = make_settings(kafka_bootstrap, unique_name("cli"), tmp_path, partitions=3)
    out = cli(s, "topics", "create")
    assert out.returncode == 0, out.stderr
    # the 3 event topics, forget requests, items, recommendations, dlq, the users changelog
    assert out.stdout.count("created") == 8
    assert f"created  {s.app.id}-users-changelog" in out.stdout
    assert f"created  {s.topics.forget}" in out.stdout
    again = cli(s, "topics", "create")
    assert again.stdout.count("exists") == 8  # idempotent

    world = generate(GeneratorConfig(n_users=40, n_items=60, days=2, seed=3))
    write_items(tmp_path / "items.jsonl", world.items)
    write_events(tmp_path / "events.jsonl", world.events)
    out = cli(s, "replay", str(tmp_path / "events.jsonl"), "--items", str(tmp_path / "items.jsonl"))
    assert out.returncode == 0, out.stderr
    per_type = Counter(e["type"] for e in world.events)

    events_by_topic = read_topic(
        s, s.topics.click, until=lambda rs: len(rs) >= per_type["click"], timeout_s=30
    )
    assert len(events_by_topic) == per_type["click"]
    # the key is the user id, and each user's events keep their order within a partition
    for r in events_by_topic:
        assert orjson.loads(r.value)["user_id"] == r.key.decode()

    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        worker.wait_healthy()
        worker.wait_counter("events_accepted", len(world.events), timeout_s=120)
        last = {}
        for e in world.events:
            last[e["user_id"]] = e["event_id"]
        user = world.events[-1]["user_id"]
        read_topic(
            s,
            s.topics.recommendations,
            until=lambda rs: any(orjson.loads(r.value)["event_id"] == last[user] for r in rs),
            timeout_s=60,
        )
        out = cli(s, "recs", user)
        assert out.returncode == 0, out.stderr
        got = orjson.loads(out.stdout)
        assert got["user_id"] == user and got["event_id"] == last[user]
        assert 0 < len(got["items"]) <= s.recs.k
        missing = cli(s, "recs", "nobody-at-all")
        assert missing.returncode == 1 and "no list" in missing.stderr
    finally:
        worker.stop()


def test_kafka_start_on_a_running_broker_says_where_it_runs_and_succeeds(
    kafka_bootstrap, kafka_run_dir
):
    out = subprocess.run(
        [sys.executable, "-m", "streamrec", "kafka", "start", "--run-dir", str(kafka_run_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == kafka_bootstrap
    assert "already running" in out.stderr and "Traceback" not in out.stderr
