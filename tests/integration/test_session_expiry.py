"""A worker frozen past its group session (SIGSTOP, then SIGCONT: a long GC pause, a stalled VM)
is expelled by the broker; when it runs again it must rejoin, process what arrived meanwhile, and
commit every partition up to its end, including partitions that had nothing committed yet.

Regression test for streams/seek_first.py: with faust-streaming 0.15.3 such a worker re-read
partitions whose offsets were never committed from positions Faust had already moved past (its
seek to committed offsets skips them), so their commits never moved again."""

from __future__ import annotations

import os
import signal
import time

import pytest

from streamrec.kafka import groups
from tests.integration.worker_proc import WorkerProcess, make_settings, send_events

pytestmark = pytest.mark.broker

ROUNDS = int(os.environ.get("STREAMREC_SESSION_EXPIRY_ROUNDS", "2"))


def events(tag: str, n: int, now: float, types: tuple[str, ...]) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"{tag}-{k}",
            "user_id": f"{tag}-u{k % 6}",
            "item_id": f"i{k % 7}",
            "type": types[k % len(types)],
            "ts": now + k * 0.01,
        }
        for k in range(n)
    ]


def test_worker_frozen_past_its_session_consumes_and_commits_again(
    kafka_bootstrap, unique_name, tmp_path
):
    name = unique_name("frozen")
    s = make_settings(kafka_bootstrap, name, tmp_path, partitions=2)
    # Commits rarer than the freeze is quick: the worker is frozen with its first events
    # processed but not committed, the case that stalled.
    s = s.replace(app={"commit_interval_s": 8.0})
    inputs = list(s.topics.event_topics().values())
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        worker.wait_healthy()
        accepted = 0
        for r in range(ROUNDS):
            # every type, so every partition of every input topic has records
            accepted += send_events(
                s, events(f"r{r}a", 24, time.time(), ("browse", "click", "purchase"))
            )
            worker.wait_counter("events_accepted", accepted)
            assert worker.proc is not None
            worker.proc.send_signal(signal.SIGSTOP)
            try:
                # clicks only while it is frozen: the other topics get no new traffic, so only a
                # correct resume commits them
                accepted += send_events(s, events(f"r{r}b", 12, time.time(), ("click",)))
                time.sleep(s.app.session_timeout_s * 1.8)
            finally:
                worker.proc.send_signal(signal.SIGCONT)
            worker.wait_counter("events_accepted", accepted, timeout_s=90)
            accepted += send_events(s, events(f"r{r}c", 6, time.time(), ("click",)))
            worker.wait_counter("events_accepted", accepted, timeout_s=90)
            try:
                groups.wait_for(s.kafka_client_config(), s.app.id, inputs, timeout_s=60)
            except TimeoutError as exc:
                raise AssertionError(f"round {r}: {exc}\n{worker.log_tail()}") from exc
    finally:
        worker.stop()
