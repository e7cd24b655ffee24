"""`streamrec backfill` end to end on the real broker: a new app rebuilds its state from the
retained topics and takes over the output topic with no event left without a list."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import orjson
import pytest

from streamrec.kafka import groups
from streamrec.kafka.broker import free_port
from streamrec.worker_process import stop_process
from tests.integration.worker_proc import (
    REPO,
    WorkerProcess,
    latest_by_key,
    make_settings,
    read_topic,
    send_events,
)

pytestmark = pytest.mark.broker


def history(n_users: int, now: float) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for u in range(n_users):
        for j, etype in enumerate(("browse", "click", "purchase")):
            out.append(
                {
                    "event_id": f"h{u}-{j}",
                    "user_id": f"h{u}",
                    "item_id": f"i{(u + j) % 7}",
                    "type": etype,
                    "ts": now - 600 + u + j,
                }
            )
    return out


class LineWaiter:
    """Reads a child's stdout in a thread so the test can wait for the phases it announces."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip())

    def wait(self, prefix: str, proc: subprocess.Popen[str], timeout_s: float = 120) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.startswith(prefix):
                    return line
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {prefix!r} line; backfill said:\n" + "\n".join(self.lines))


class Trickle:
    """Live traffic during the cutover: one event per fresh user, so each needs its own list."""

    def __init__(self, settings, now: float) -> None:
        self.settings = settings
        self.now = now
        self.sent: list[dict[str, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            event = {
                "event_id": f"c{n}",
                "user_id": f"c{n}",
                "item_id": f"i{n % 7}",
                "type": "click",
                "ts": self.now + n * 0.01,
            }
            send_events(self.settings, [event])
            self.sent.append(event)
            n += 1
            time.sleep(0.1)

    def __enter__(self) -> Trickle:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def backfill_cmd(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        stop_process(p)


def test_backfill_rebuilds_state_then_cuts_over_without_a_gap(
    kafka_bootstrap, unique_name, tmp_path, backfill_cmd
):
    name = unique_name("bf")
    live = make_settings(kafka_bootstrap, name, tmp_path / "live", partitions=2)
    now = time.time()
    old = WorkerProcess(live, tmp_path / "old.log").start()
    try:
        old.wait_healthy()
        past = history(12, now)
        send_events(live, past)
        old.wait_counter("events_accepted", len(past))

        new_id = f"{name}-v2"
        new_port = free_port()
        cmd = [
            sys.executable, "-m", "streamrec", "backfill",
            "--app-id", new_id,
            "--datadir", str(tmp_path / "new"),
            "--checkpoint", "",
            "--web-port", str(new_port),
            "--max-lag", "20",
            "--state", str(tmp_path / "handover.json"),
            "--serve",
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**os.environ, **live.to_env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        backfill_cmd.append(proc)
        said = LineWaiter(proc.stdout)  # type: ignore[arg-type]
        # Hold the live worker while the backfill catches up, so the backfill gets AHEAD of it:
        # the cutover must then wait for the live app to pass the backfill's offsets, or the
        # events in between would only have lists on the shadow topic.
        assert old.proc is not None
        old.proc.send_signal(signal.SIGSTOP)
        with Trickle(live, now) as trickle:
            said.wait("caught up", proc)
            old.proc.send_signal(signal.SIGCONT)
            said.wait("READY", proc)
            old.stop()  # the operator stops the live app's workers
            said.wait("CUTOVER", proc)
            said.wait("serving", proc)
            new = WorkerProcess(
                live.replace(app={"id": new_id, "web_port": new_port}), tmp_path / "unused.log"
            )
            deadline = time.monotonic() + 90
            while new.get("/health/")[0] != 200:
                assert proc.poll() is None and time.monotonic() < deadline, "\n".join(said.lines)
                time.sleep(0.3)
            time.sleep(1.0)  # some traffic once the new app serves
        during = trickle.sent
        assert len(during) > 5

        # Every event sent during the cutover has its own list on the live output topic.
        inputs = list(live.topics.event_topics().values())
        groups.wait_for(live.kafka_client_config(), new_id, inputs, timeout_s=60)
        want = {e["event_id"] for e in during}
        records = read_topic(
            live,
            live.topics.recommendations,
            until=lambda rs: want <= {orjson.loads(r.value)["event_id"] for r in rs},
            timeout_s=30,
        )
        listed = {orjson.loads(r.value)["event_id"] for r in records}
        assert sorted(want - listed) == []
        latest = latest_by_key(records)
        assert (
            orjson.loads(latest[during[-1]["user_id"].encode()])["event_id"]
            == during[-1]["event_id"]
        )

        # The new app's state was rebuilt from the retained topics: the old users are there.
        status, user = new.get("/users/h3/")
        assert status == 200 and user["found"], user
        handover = orjson.loads((tmp_path / "handover.json").read_bytes())
        assert all(handover["live"][tp] >= off for tp, off in handover["backfill"].items())
        shadow = f"{live.topics.recommendations}.backfill.{new_id}"
        assert read_topic(live, shadow, until=lambda rs: len(rs) > 0, timeout_s=10)
    finally:
        old.stop()
