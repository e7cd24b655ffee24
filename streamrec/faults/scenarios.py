"""The fault scenarios of issue 5, end to end on a real broker. Each returns a :class:`Result`
with the figures (events replayed, lost, double-counted, recovery times); callers assert on it
(tests/faults) or print it (bench/faults.py). Sizes are parameters: CI runs a few thousand
events, the bench 100k and more.

Every wait is on a condition with a deadline (``harness.WAIT_S``); recovery times are measured,
never asserted on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from streamrec.faults.harness import (
    WAIT_S,
    Background,
    Comparison,
    Expected,
    OwnBroker,
    Workers,
    compare,
    expected_of,
    make_log,
    make_settings,
    produce,
    read_lists,
    read_tables,
    remove_datadir,
    sample_users,
    served,
    wait_drained,
    worker_settings,
)
from streamrec.features.user_state import FeatureLimits
from streamrec.kafka.read import read_records
from streamrec.settings import Settings
from streamrec.worker_process import WorkerFailed, WorkerProcess
from streams.topics import create_topics

Log = Callable[[str], None]


@dataclass
class Result:
    scenario: str
    events: int  # records replayed to the event topics (redeliveries included)
    distinct: int  # distinct event ids among them
    comparison: Comparison | None = None
    not_served: int = 0  # sampled users no live worker served with the right counts
    checked_served: int = 0
    recovery_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failed_steps: list[str] = field(default_factory=list)  # intermediate checks that failed

    @property
    def lost(self) -> int:
        return self.comparison.lost if self.comparison else -1

    @property
    def double(self) -> int:
        return self.comparison.double if self.comparison else -1

    @property
    def ok(self) -> bool:
        return (
            self.comparison is not None
            and self.comparison.ok
            and self.not_served == 0
            and not self.failed_steps
        )

    def describe(self) -> str:
        rec = ", ".join(f"{k} {v:.1f} s" for k, v in self.recovery_s.items())
        cmp = self.comparison.describe() if self.comparison else "no comparison"
        lines = [
            f"{self.scenario}: {self.events} events ({self.distinct} distinct); {cmp}",
            f"  served {self.checked_served - self.not_served}/{self.checked_served}; {rec}",
            *(f"  {n}" for n in self.notes),
            *(f"  FAILED STEP {n}" for n in self.failed_steps),
        ]
        return "\n".join(lines)


def _quiet(_: str) -> None:
    pass


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _distinct(events: list[dict[str, Any]]) -> int:
    return len({e["event_id"] for e in events})


def _check(
    s: Settings,
    exp: Expected,
    live: list[WorkerProcess],
    sample: int,
    result: Result,
    lists: bool = True,
) -> Comparison:
    """Compare the drained tables (changelog) and lists with ``exp``; sample HTTP serving."""
    tables = read_tables(s)
    cmp = compare(exp, tables, s.features.sequence_max, read_lists(s) if lists else None)
    users = sample_users(exp, sample)
    bad, examples = served(live, exp, users)
    result.checked_served += len(users)
    result.not_served += bad
    result.notes.extend(examples[:5])
    return cmp


def _replay_into_one_worker(
    ws: Workers,
    s: Settings,
    events: list[dict[str, Any]],
    progress: bool,
    rate: float | None,
    fraction: float,
) -> tuple[WorkerProcess, Background, int]:
    """Start a worker, replay ``events`` in the background, and return once the worker has
    taken in ``fraction`` of them (the moment a fault strikes), with how many it had."""
    w = ws.start(s, "worker")
    w.wait_healthy()
    bg = Background(s, events, progress, rate)
    bg.start()
    return w, bg, w.wait_counter("events_in", int(len(events) * fraction))


def _counts_note(label: str, w: WorkerProcess) -> str:
    after = w.counters()
    return (
        f"{label}: events_in {after.get('events_in', 0)}, "
        f"duplicates {after.get('events_duplicate', 0)}"
    )


def kill9_restart(
    bootstrap: str,
    workdir: Path,
    n_events: int = 3000,
    n_users: int = 300,
    *,
    rate: float | None = None,
    kill_at: float = 0.3,
    partitions: int = 2,
    sample: int = 200,
    progress: bool = False,
    log: Log = _quiet,
) -> Result:
    """``kill -9`` the worker once it has taken in ``kill_at`` of the log while the log is still
    being replayed, restart it on the same local state, re-send the first tenth of the log (a
    producer's redelivery: must count nothing), and compare the final tables and lists."""
    s = make_settings(bootstrap, _name("f9"), workdir / "w1", partitions=partitions)
    create_topics(s)
    events = make_log(n_events, n_users, seed=1)
    redeliver = events[: len(events) // 10]
    exp = expected_of(events + redeliver, s)
    result = Result("kill -9 + restart", len(events) + len(redeliver), _distinct(events))
    with Workers(workdir) as ws:
        w, bg, before = _replay_into_one_worker(ws, s, events, progress, rate, kill_at)
        w.kill9()
        log(f"killed the worker (-9) after >= {before} events in; restarting it")
        if not bg.is_alive():
            result.notes.append("the producer had finished before the kill")
        w2 = ws.start(s, "worker-restarted")
        result.recovery_s["ready after restart"] = w2.wait_healthy()
        bg.result()
        produce(s, redeliver)
        wait_drained(s, ws, progress=progress)
        result.recovery_s["caught up after restart"] = time.monotonic() - w2.started_at
        result.comparison = _check(s, exp, [w2], sample, result)
        result.notes.append(_counts_note("restarted worker", w2))
    return result


def freeze_past_session(
    bootstrap: str,
    workdir: Path,
    n_events: int = 3000,
    n_users: int = 300,
    *,
    rate: float | None = 1000.0,
    freeze_at: float = 0.2,
    partitions: int = 2,
    sample: int = 200,
    progress: bool = False,
    log: Log = _quiet,
) -> Result:
    """Freeze the worker (SIGSTOP) while the log is being replayed, for longer than its group
    session, then let it run again (SIGCONT). The broker has expelled it meanwhile: its commits
    fail, it rejoins, recovers, and must resume every partition at the broker's committed offset
    (a long GC pause, a stalled VM or container, a laptop lid)."""
    # Commits rarer than usual, so the freeze catches processed but uncommitted events: the
    # rejoined worker must re-read them, from partitions that may have nothing committed yet.
    s = make_settings(
        bootstrap, _name("fz"), workdir / "w1", partitions=partitions, commit_interval_s=5.0
    )
    create_topics(s)
    events = make_log(n_events, n_users, seed=5)
    exp = expected_of(events, s)
    result = Result("frozen past its session", len(events), _distinct(events))
    with Workers(workdir) as ws:
        w, bg, before = _replay_into_one_worker(ws, s, events, progress, rate, freeze_at)
        w.freeze()
        frozen_s = s.app.session_timeout_s * 2
        log(f"froze the worker after >= {before} events in, for {frozen_s:g} s")
        try:
            time.sleep(frozen_s)  # the fault itself: longer than the session
        finally:
            w.thaw()
        t_thaw = time.monotonic()
        if not bg.is_alive():
            result.notes.append("the producer had finished during the freeze")
        bg.result()
        wait_drained(s, ws, progress=progress)
        result.recovery_s["caught up after thaw"] = time.monotonic() - t_thaw
        w.wait_healthy()
        result.comparison = _check(s, exp, [w], sample, result)
        result.notes.append(_counts_note("worker", w))
    return result


def broker_restart(
    workdir: Path,
    n_events: int = 3000,
    n_users: int = 300,
    *,
    down_s: float = 5.0,
    partitions: int = 2,
    sample: int = 200,
    progress: bool = False,
    log: Log = _quiet,
) -> Result:
    """On a broker of its own: stop the broker (SIGTERM) while the worker is working through
    the first half of the log, keep it down ``down_s`` (the fault's length, not a wait on
    anything), start it again on the same data, send the second half; the worker must reconnect
    and catch up with nothing lost."""
    b = OwnBroker(workdir / "kafka")
    bootstrap = b.start()
    try:
        s = make_settings(bootstrap, _name("fb"), workdir / "w1", partitions=partitions)
        create_topics(s)
        events = make_log(n_events, n_users, seed=2)
        first, second = events[: len(events) // 2], events[len(events) // 2 :]
        exp = expected_of(events, s)
        result = Result("broker restart", len(events), _distinct(events))
        with Workers(workdir) as ws:
            w = ws.start(s, "worker")
            w.wait_healthy()
            produce(s, first, progress)
            w.wait_counter("events_in", len(first) // 4)
            b.stop()
            log(f"broker stopped; worker events_in was >= {len(first) // 4}")
            time.sleep(down_s)  # the outage itself
            w.check_alive()
            t_up = time.monotonic()
            result.recovery_s["broker back"] = b.restart()
            produce(s, second, progress)
            wait_drained(s, ws, progress=progress)
            result.recovery_s["caught up after broker restart"] = time.monotonic() - t_up
            w.check_alive()
            w.wait_healthy()
            result.comparison = _check(s, exp, [w], sample, result)
        return result
    finally:
        b.close()


def scale_out_in(
    bootstrap: str,
    workdir: Path,
    n_events: int = 4000,
    n_users: int = 300,
    *,
    partitions: int = 4,
    sample: int = 200,
    progress: bool = False,
    log: Log = _quiet,
) -> Result:
    """Two workers in one group on ``partitions``-partition topics: a second worker joins while
    events flow; it leaves gracefully (SIGTERM) while events flow; a third joins; then the first
    is killed (-9) while events flow. After each step every sampled user must be served (over
    HTTP, by the worker that owns it now) with the reference's counts, and the tables must equal
    the reference of the log so far."""
    s1 = make_settings(bootstrap, _name("fs"), workdir / "w1", partitions=partitions)
    create_topics(s1)
    events = make_log(n_events, n_users, seed=3)
    q = len(events) // 4
    chunks = [events[:q], events[q : 2 * q], events[2 * q : 3 * q], events[3 * q :]]
    result = Result("2 workers: join, leave, kill -9", len(events), _distinct(events))

    def step(label: str, upto: int, ws: Workers) -> None:
        wait_drained(s1, ws, progress=progress, desc=label)
        exp = expected_of(events[:upto], s1)
        cmp = _check(s1, exp, ws.live, sample, result, lists=False)
        log(f"{label}: {cmp.describe()}")
        if not cmp.ok:
            result.failed_steps.append(f"{label}: {cmp.describe()}")

    with Workers(workdir) as ws:
        w1 = ws.start(s1, "worker-1")
        w1.wait_healthy()
        produce(s1, chunks[0], progress)
        step("one worker", q, ws)

        # join while events flow; the rest of the chunk once both serve
        half = len(chunks[1]) // 2
        bg = Background(s1, chunks[1][:half], progress, rate=None)
        w2 = ws.start(worker_settings(s1, workdir / "w2"), "worker-2")
        bg.start()
        result.recovery_s["join: ready"] = w2.wait_healthy()
        bg.result()
        w1.wait_healthy()
        produce(s1, chunks[1][half:], progress)
        step("second worker joined", 2 * q, ws)
        if not w2.counters().get("events_in"):
            result.failed_steps.append("worker-2 took no events after joining")

        # graceful leave while events flow
        bg = Background(s1, chunks[2], progress, rate=None)
        bg.start()
        t_leave = time.monotonic()
        w2.stop()
        bg.result()
        step("worker-2 left (SIGTERM)", 3 * q, ws)
        result.recovery_s["graceful leave: caught up"] = time.monotonic() - t_leave

        # a third joins; then kill -9 the first while events flow
        w3 = ws.start(worker_settings(s1, workdir / "w3"), "worker-3")
        w3.wait_healthy()
        w1.wait_healthy()
        base = w1.counters().get("events_in", 0)
        bg = Background(s1, chunks[3], progress, rate=None)
        bg.start()
        try:
            w1.wait_counter("events_in", base + max(1, len(chunks[3]) // (2 * partitions)), 120)
        except WorkerFailed:
            result.notes.append("worker-1 took no events of the last chunk before the kill")
        t_kill = time.monotonic()
        w1.kill9()
        bg.result()
        step("worker-1 killed (-9)", len(events), ws)
        result.recovery_s["kill -9: caught up"] = time.monotonic() - t_kill
        exp = expected_of(events, s1)
        result.comparison = compare(exp, read_tables(s1), s1.features.sequence_max, read_lists(s1))
    return result


def lost_local_state(
    bootstrap: str,
    workdir: Path,
    n_events: int = 3000,
    n_users: int = 300,
    *,
    partitions: int = 2,
    sample: int = 200,
    progress: bool = False,
    log: Log = _quiet,
) -> Result:
    """Process most of the log, stop the worker, delete its RocksDB directory, start it again:
    it must rebuild every user from the changelog topic (HTTP answers equal to the changelog's
    records), then take the rest of the log plus a redelivery of its first tenth (counted once:
    the de-duplication state came back too)."""
    s = make_settings(bootstrap, _name("fl"), workdir / "w1", partitions=partitions)
    create_topics(s)
    events = make_log(n_events, n_users, seed=4)
    cut = len(events) * 9 // 10
    head, tail = events[:cut], events[cut:]
    redeliver = events[: len(events) // 10]
    exp = expected_of(events + redeliver, s)
    result = Result("local state deleted", len(events) + len(redeliver), _distinct(events))
    with Workers(workdir) as ws:
        w = ws.start(s, "worker")
        w.wait_healthy()
        produce(s, head, progress)
        wait_drained(s, ws, progress=progress)
        if w.stop() != 0:
            result.notes.append(f"worker exited with {w.proc and w.proc.returncode} on SIGTERM")
        before = read_tables(s)
        remove_datadir(s)
        log(f"deleted {s.app.datadir}; restarting")
        w2 = ws.start(s, "worker-rebuilt")
        result.recovery_s["ready after state loss"] = w2.wait_healthy()
        # the rebuilt table, over HTTP, is the changelog's, record for record
        limits = FeatureLimits.from_settings(s.features)
        users = sorted(before)
        mismatched = []
        for user in users:
            status, body = w2.get(f"/users/{user}/")
            want = {"user_id": user, "found": True, **before[user].summary(limits)}
            if status != 200 or body != _jsonish(want):
                mismatched.append(user)
        result.checked_served += len(users)
        result.not_served += len(mismatched)
        if mismatched:
            result.notes.append(f"rebuilt users differing from the changelog: {mismatched[:5]}")
        produce(s, tail + redeliver, progress)
        wait_drained(s, ws, progress=progress)
        result.recovery_s["caught up after state loss"] = time.monotonic() - w2.started_at
        result.comparison = _check(s, exp, [w2], sample, result)
    return result


def failing_lists(
    bootstrap: str,
    workdir: Path,
    n_events: int = 2000,
    n_users: int = 200,
    *,
    partitions: int = 2,
    sample: int = 100,
    progress: bool = False,
    log: Log = _quiet,
) -> Result:
    """The lists fail to go out (fail points, streams/failpoints.py). First for a while: the
    model fails on every batch, and the heuristic lists and the send each fail a few times; the
    worker must retry and publish every list. Then for good: every send fails; the worker must
    stop with exit code 1 without acking, and a restarted worker must publish the lists of every
    event it had not acked. Nothing is lost, and every user ends with the list of the event
    applied last."""
    s = make_settings(bootstrap, _name("lf"), workdir / "w1", partitions=partitions)
    create_topics(s)
    events = make_log(n_events, n_users, seed=6)
    exp = expected_of(events, s)
    half = len(events) // 2
    result = Result("lists fail to publish", len(events), _distinct(events))
    with Workers(workdir) as ws:
        flaky = s.replace(
            errors={
                "failpoints": "rank=always,rank.fallback=3,publish.send=3",
                "publish_attempts": 8,
                "retry_backoff_ms": 20.0,
            }
        )
        w = ws.start(flaky, "worker-flaky")
        w.wait_healthy()
        produce(s, events[:half], progress)
        wait_drained(s, ws, progress=progress, desc="drain (flaky lists)")
        failures = w.counters().get("publish_failures", 0)
        result.notes.append(f"flaky phase: {failures} failed publish attempts, all retried")
        if failures < 6:  # 3 failed fallbacks + 3 failed sends
            result.failed_steps.append(f"expected >= 6 failed publish attempts, saw {failures}")
        w.stop()
        broken = s.replace(errors={"failpoints": "publish.send=always", "publish_attempts": 3})
        w2 = ws.start(broken, "worker-broken")
        w2.wait_healthy()
        produce(s, events[half:], progress)
        code = w2.wait_exit()
        result.notes.append(f"broken phase: the worker exited with {code}")
        if code != 1:
            result.failed_steps.append(f"a worker that cannot publish exited with {code}, not 1")
        log("the worker stopped on its fault; restarting it without fail points")
        w3 = ws.start(s, "worker-restarted")
        result.recovery_s["ready after the fault"] = w3.wait_healthy()
        wait_drained(s, ws, progress=progress)
        result.recovery_s["caught up after the fault"] = time.monotonic() - w3.started_at
        result.comparison = _check(s, exp, [w3], sample, result)
    return result


def internal_errors_past_budget(
    bootstrap: str,
    workdir: Path,
    n_events: int = 1000,
    n_users: int = 100,
    *,
    budget: int = 5,
    partitions: int = 2,
    sample: int = 100,
    progress: bool = False,
    log: Log = _quiet,
) -> Result:
    """Reading user state fails on every event (a broken store). The first ``budget`` events go
    to the DLQ as internal errors; the next stops the worker (exit code 1) instead of
    dead-lettering the stream. Restarted healthy, it applies every other event."""
    s = make_settings(bootstrap, _name("eb"), workdir / "w1", partitions=partitions)
    create_topics(s)
    events = make_log(n_events, n_users, seed=8, dup_frac=0.0)
    result = Result("errors past the budget", len(events), _distinct(events))
    with Workers(workdir) as ws:
        broken = s.replace(
            errors={"failpoints": "state.read=always", "budget": budget, "budget_window": 1000}
        )
        w = ws.start(broken, "worker-broken")
        w.wait_healthy()
        produce(s, events, progress)
        code = w.wait_exit()
        result.notes.append(f"the broken worker exited with {code}")
        if code != 1:
            result.failed_steps.append(f"a worker past its error budget exited with {code}, not 1")
        dlq = read_records(s.kafka_client_config(), s.topics.dlq, WAIT_S)
        reasons = {dict(r.headers).get("dlq.error", b"").decode() for r in dlq}
        result.notes.append(f"dead-lettered: {len(dlq)} ({', '.join(sorted(reasons))})")
        if len(dlq) != budget or reasons != {"internal_error"}:
            result.failed_steps.append(
                f"expected {budget} internal_error dead letters, got {len(dlq)} {reasons}"
            )
        parked = {orjson.loads(r.value)["event_id"] for r in dlq if r.value}
        exp = expected_of([e for e in events if e["event_id"] not in parked], s)
        log("restarting the worker with a working store")
        w2 = ws.start(s, "worker-restarted")
        result.recovery_s["ready after the fault"] = w2.wait_healthy()
        wait_drained(s, ws, progress=progress)
        result.comparison = _check(s, exp, [w2], sample, result)
    return result


def dead_letters_unsendable(
    bootstrap: str,
    workdir: Path,
    n_events: int = 600,
    n_users: int = 60,
    *,
    n_bad: int = 5,
    partitions: int = 2,
    sample: int = 60,
    progress: bool = False,
    log: Log = _quiet,
) -> Result:
    """Bad events among good ones while no dead letter can be sent (fail point ``dlq.send``): the
    worker must stop (exit code 1) rather than ack a bad event it could not park. Restarted
    healthy, it parks every bad event in the DLQ and applies every good one."""
    s = make_settings(bootstrap, _name("dq"), workdir / "w1", partitions=partitions)
    create_topics(s)
    events = make_log(n_events, n_users, seed=9, dup_frac=0.0)
    exp = expected_of(events, s)
    result = Result("dead letters cannot be sent", len(events) + n_bad, _distinct(events))
    with Workers(workdir) as ws:
        broken = s.replace(errors={"failpoints": "dlq.send=always"})
        w = ws.start(broken, "worker-broken")
        w.wait_healthy()
        half = len(events) // 2
        produce(s, events[:half], progress)
        bad_producer = KafkaProducer(**s.kafka_client_config())
        for n in range(n_bad):  # not JSON: each must go to the DLQ
            bad_producer.send(s.topics.click, key=f"u{n}".encode(), value=b"{not json")
        bad_producer.flush()
        bad_producer.close()
        produce(s, events[half:], progress)
        code = w.wait_exit()
        result.notes.append(f"the worker that could not dead-letter exited with {code}")
        if code != 1:
            result.failed_steps.append(f"exited with {code}, not 1")
        w2 = ws.start(s, "worker-restarted")
        result.recovery_s["ready after the fault"] = w2.wait_healthy()
        wait_drained(s, ws, progress=progress)
        dlq = read_records(s.kafka_client_config(), s.topics.dlq, WAIT_S)
        parked = {r.value for r in dlq}
        result.notes.append(f"dead-lettered after the restart: {len(dlq)}")
        if parked != {b"{not json"} or len(dlq) < n_bad:
            result.failed_steps.append(f"expected {n_bad} dead letters, got {len(dlq)}")
        result.comparison = _check(s, exp, [w2], sample, result)
    return result


def _jsonish(value: Any) -> Any:
    """``value`` as it comes back from a JSON round trip (tuples as lists)."""
    return orjson.loads(orjson.dumps(value))
