"""Machinery for fault scenarios against a real broker and real ``streamrec worker`` processes.

What is compared, and why. A live worker consumes the browse, click and purchase topics
independently, so a user's events of different types may be applied in another order than the
log's. The per-user facts that do not depend on that order are compared with
``streamrec.reference.run_reference`` over the same log:

- the number of accepted events per type (and in total),
- for users whose whole history fits in the kept sequence (``features.sequence_max``): the set of
  accepted event ids (digests), each exactly once,
- the newest event time, and the purchased items in order (purchases come from one topic
  partition per user, so their order is the log's).

The recent sequence's order, the rolling-window buckets and ``first_ts`` depend on arrival order
across topics and are not compared. The accepted set itself is order-free for the logs built
here: per user, event times strictly increase along the log, and a redelivered event always
follows its original on the same topic partition, so the sequence/floor de-duplication in
``UserState`` accepts exactly the first copy of every event id whatever the interleaving.

Lost events: accepted by the reference but missing from the live table; double-counted: counted
by the live table more often than by the reference. Per user this is the larger of the event-id
view (where the sequence is complete) and the per-type count view.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka.errors import KafkaError
from tqdm import tqdm

from streamrec.events.schema import EVENT_TYPES
from streamrec.events.validate import Message
from streamrec.features.user_state import UserState, event_id_hash
from streamrec.kafka import broker, groups
from streamrec.kafka.read import read_to_end
from streamrec.reference import ReferenceRun, run_reference
from streamrec.replay import ReplaySummary, replay
from streamrec.settings import Settings, load_settings
from streamrec.wait import wait_until
from streamrec.worker_process import WorkerProcess
from streams.topics import changelog_topic

# Default deadline for anything asynchronous: a deadline, never a measurement. Generous, since
# the machines these run on may be small and shared.
WAIT_S = float(os.environ.get("STREAMREC_FAULTS_WAIT_S", "300"))


class FaultError(AssertionError):
    """A scenario step did not happen within its deadline, or a process died unexpectedly."""


def make_settings(
    bootstrap: str,
    name: str,
    datadir: Path,
    *,
    partitions: int = 2,
    commit_interval_s: float = 0.5,
    session_timeout_s: float = 6.0,
) -> Settings:
    """Settings of one scenario: topics named after ``name`` (= app id and consumer group), no
    model (the heuristic lists: the faults are about state, not ranking)."""
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
            "forget": f"{name}.forget",
            "partitions": partitions,
        },
        app={
            "id": name,
            "datadir": str(datadir),
            "web_port": broker.free_port(),
            "commit_interval_s": commit_interval_s,
            "session_timeout_s": session_timeout_s,
        },
        model={"checkpoint": "", "cache_mb": 16},
        recs={"k": 10, "batch_wait_ms": 2.0},
    )


def worker_settings(s: Settings, datadir: Path) -> Settings:
    """The same app (consumer group, topics) as ``s`` for another worker: own datadir and port."""
    return s.replace(app={"datadir": str(datadir), "web_port": broker.free_port()})


# --- the event log -----------------------------------------------------------------------------


def make_log(
    n_events: int,
    n_users: int,
    *,
    seed: int = 0,
    n_items: int = 500,
    dup_frac: float = 0.02,
    span_s: float = 2 * 86400.0,
    prefix: str = "e",
    now: float | None = None,
) -> list[dict[str, Any]]:
    """A deterministic log of ``n_events`` distinct events (plus ~``dup_frac`` redeliveries).

    Event ids are ``<prefix><n>``. Times strictly increase along the log (so per user and per
    type too) and end a minute before ``now``. Users are skewed (a few heavy users overflow the
    kept sequence, exercising the de-duplication floors). A redelivery repeats one of the last
    1000 events, byte for byte, later in the log.
    """
    rng = random.Random(seed)
    now = time.time() if now is None else now
    step = span_s / max(1, n_events)
    t0 = now - 60.0 - span_s
    types = list(EVENT_TYPES)
    weights = [0.70, 0.22, 0.08][: len(types)]
    out: list[dict[str, Any]] = []
    recent: list[dict[str, Any]] = []
    for n in range(n_events):
        user = int(n_users * rng.random() ** 2)  # skewed: low ids are heavy users
        event = {
            "event_id": f"{prefix}{n}",
            "user_id": f"u{user}",
            "item_id": f"i{rng.randrange(n_items)}",
            "type": rng.choices(types, weights)[0],
            "ts": round(t0 + n * step, 3),
        }
        out.append(event)
        recent.append(event)
        if len(recent) > 1000:
            recent.pop(0)
        if rng.random() < dup_frac:
            out.append(dict(rng.choice(recent)))
    return out


def encode(event: Mapping[str, Any]) -> bytes:
    """The record value replay() sends for ``event`` (same bytes, so the reference sees them)."""
    return orjson.dumps(dict(event), option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass
class Expected:
    """The reference outcome of a log, plus per-user accepted event-id digests."""

    run: ReferenceRun
    ids: dict[str, set[int]]
    events: int  # records in the log (redeliveries included)

    @property
    def users(self) -> set[str]:
        return set(self.run.states)


def expected_of(events: Sequence[Mapping[str, Any]], s: Settings) -> Expected:
    msgs = [Message(e["type"], str(e["user_id"]).encode(), encode(e)) for e in events]
    run = run_reference(msgs, s)
    ids: dict[str, set[int]] = {}
    seen: set[str] = set()
    for e in events:
        if e["event_id"] not in seen:
            seen.add(e["event_id"])
            ids.setdefault(str(e["user_id"]), set()).add(event_id_hash(e["event_id"]))
    return Expected(run, ids, len(events))


# --- comparison --------------------------------------------------------------------------------


@dataclass
class Comparison:
    users_expected: int
    users_found: int
    lost: int = 0
    double: int = 0
    other_mismatches: int = 0  # same events counted, but last_ts / purchased differ
    lists_missing: int = 0  # users without a list for the event applied last
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.double or self.other_mismatches or self.lists_missing)

    def describe(self) -> str:
        head = (
            f"users {self.users_found}/{self.users_expected}, lost {self.lost}, "
            f"double-counted {self.double}, other mismatches {self.other_mismatches}, "
            f"users without a current list {self.lists_missing}"
        )
        return "\n  ".join([head, *self.examples[:10]])


def compare(
    exp: Expected,
    got: Mapping[str, UserState],
    seq_max: int,
    lists: Mapping[str, Mapping[str, Any]] | None = None,
) -> Comparison:
    """Order-free comparison of live user tables with the reference (see the module doc)."""
    c = Comparison(len(exp.users), len(set(got) & exp.users))
    for user in sorted(exp.users | set(got)):
        e = exp.run.states.get(user, UserState())
        g = got.get(user, UserState())
        count_lost = sum(max(0, a - b) for a, b in zip(e.counts, g.counts, strict=True))
        count_double = sum(max(0, b - a) for a, b in zip(e.counts, g.counts, strict=True))
        lost_u, double_u = count_lost, count_double
        if e.n_events <= seq_max and g.n_events <= seq_max:
            hashes = [h for *_, h in g.seq]
            want = exp.ids.get(user, set())
            lost_u = max(lost_u, len(want - set(hashes)))
            double_u = max(double_u, len(hashes) - len(set(hashes) & want))
        c.lost += lost_u
        c.double += double_u
        if lost_u or double_u:
            c.examples.append(
                f"{user}: expected counts {e.counts} (n={e.n_events}), got {g.counts} "
                f"(n={g.n_events})"
            )
        elif (e.n_events, e.last_ts, e.purchased) != (g.n_events, g.last_ts, g.purchased):
            c.other_mismatches += 1
            c.examples.append(
                f"{user}: n {e.n_events}/{g.n_events} last_ts {e.last_ts}/{g.last_ts} "
                f"purchased {e.purchased}/{g.purchased}"
            )
        if lists is not None and user in exp.users and g.seq:
            rec = lists.get(user)
            if rec is None or event_id_hash(str(rec.get("event_id"))) != g.last_applied:
                c.lists_missing += 1
                c.examples.append(
                    f"{user}: latest list is for {rec and rec.get('event_id')!r}, not for the "
                    "event applied last"
                )
    return c


# --- worker processes --------------------------------------------------------------------------


class Workers:
    """The worker processes of a scenario; stops the survivors at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.all: list[WorkerProcess] = []

    def start(self, s: Settings, name: str) -> WorkerProcess:
        w = WorkerProcess(s, self.workdir / f"{name}.log", name=name, wait_s=WAIT_S).start()
        self.all.append(w)
        return w

    @property
    def live(self) -> list[WorkerProcess]:
        return [w for w in self.all if w.alive()]

    def logs(self) -> str:
        return "\n".join(w.log_tail() for w in self.all)

    def close(self) -> None:
        for w in self.all:
            if w.alive():
                w.stop()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- producing ---------------------------------------------------------------------------------


def produce(
    s: Settings,
    events: Sequence[Mapping[str, Any]],
    progress: bool = False,
    rate: float | None = None,
) -> ReplaySummary:
    """Publish ``events`` to the scenario's topics with streamrec.replay (acks=all; flat out, or
    ``rate`` events per second)."""
    return replay(
        events,
        s.kafka_client_config(),
        topics=s.topics.event_topics(),
        rate=rate,
        progress=progress,
        total=len(events),
    )


class Background(threading.Thread):
    """produce() in a thread, so a fault can be injected while events are still being sent."""

    def __init__(
        self,
        s: Settings,
        events: Sequence[Mapping[str, Any]],
        progress: bool = False,
        rate: float | None = None,
    ) -> None:
        super().__init__(daemon=True, name="fault-producer")
        self.s, self.events, self.progress, self.rate = s, events, progress, rate
        self.summary: ReplaySummary | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.summary = produce(self.s, self.events, self.progress, self.rate)
        except BaseException as exc:  # handed to the scenario thread by result()
            self.error = exc

    def result(self, timeout_s: float = WAIT_S) -> ReplaySummary:
        self.join(timeout_s)
        if self.is_alive():
            raise FaultError(f"the producer did not finish within {timeout_s:g} s")
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


# --- quiescence and final tables ---------------------------------------------------------------


def wait_drained(
    s: Settings,
    workers: Workers,
    timeout_s: float = WAIT_S,
    progress: bool = False,
    desc: str = "drain",
) -> float:
    """Wait until the app's group has committed the end of every event-topic partition: every
    event is processed, its state written and (Faust flushes before committing) its changelog
    record durable. Returns the seconds waited. Raises FaultError when no worker is left alive
    or the deadline passes (with the gap per partition)."""
    t0 = time.monotonic()
    client = s.kafka_client_config()
    topics = list(s.topics.event_topics().values())
    ends = groups.end_offsets(client, topics)
    total = sum(ends.values())
    bar = tqdm(total=total, desc=desc, unit="ev", disable=not progress, dynamic_ncols=True)
    with bar:
        while True:
            if not workers.live:
                raise FaultError(f"no worker alive while draining:\n{workers.logs()}")
            try:
                done = groups.committed_offsets(client, s.app.id, topics)
            except KafkaError:  # the broker may be briefly unavailable (broker-restart scenario)
                done = {}
            behind = {
                tp: end - done.get(tp, 0) for tp, end in ends.items() if done.get(tp, 0) < end
            }
            bar.update(total - sum(behind.values()) - bar.n)
            if not behind:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                gaps = ", ".join(f"{tp.topic}[{tp.partition}]: {n}" for tp, n in behind.items())
                raise FaultError(
                    f"not drained after {timeout_s:g} s; uncommitted: {gaps}\n{workers.logs()}"
                )
            time.sleep(0.5)


def read_latest(s: Settings, topic: str, timeout_s: float = WAIT_S) -> dict[bytes, bytes | None]:
    """The latest value per key of every partition of ``topic``, up to its current end."""
    try:
        records = read_to_end(s.kafka_client_config(), topic, timeout_s)
    except TimeoutError as exc:
        raise FaultError(str(exc)) from exc
    return {k: v for k, v in records if k is not None}


def read_tables(s: Settings) -> dict[str, UserState]:
    """The users table as its changelog topic holds it (the latest record per user)."""
    return {
        k.decode(): UserState.from_bytes(v)
        for k, v in read_latest(s, changelog_topic(s)).items()
        if v is not None
    }


def read_lists(s: Settings) -> dict[str, dict[str, Any]]:
    """The latest published list per user."""
    return {
        k.decode(): orjson.loads(v)
        for k, v in read_latest(s, s.topics.recommendations).items()
        if v is not None
    }


def served(
    workers: Sequence[WorkerProcess], exp: Expected, users: Sequence[str], timeout_s: float = 60.0
) -> tuple[int, list[str]]:
    """How many of ``users`` no live worker serves correctly over HTTP (``/users/<id>/`` with the
    reference's counts), with examples. A user is served by the worker owning its partition;
    users not served are asked again until ``timeout_s`` (a worker may still be settling after
    a rebalance)."""
    pending = list(users)
    deadline = time.monotonic() + timeout_s
    while True:
        bad: list[str] = []
        for user in pending:
            want = exp.run.states[user]
            answers = []
            for w in workers:
                status, body = w.get(f"/users/{user}/")
                answers.append((w.name, status, body.get("events") if status == 200 else None))
                if status == 200 and body.get("events") == want.n_events:
                    counts = [body["counts"].get(t, 0) for t in EVENT_TYPES]
                    if counts == want.counts:
                        break
            else:
                bad.append(f"{user}: want n={want.n_events} {want.counts}; answers {answers}")
        if not bad or time.monotonic() > deadline:
            return len(bad), bad
        pending = [b.split(":", 1)[0] for b in bad]
        time.sleep(1.0)


def sample_users(exp: Expected, n: int, seed: int = 0) -> list[str]:
    users = sorted(exp.users)
    if len(users) <= n:
        return users
    return sorted(random.Random(seed).sample(users, n))


# --- a broker of one's own ---------------------------------------------------------------------


class OwnBroker:
    """A single-node broker on free ports that can be stopped and restarted on the SAME data
    (``deploy/kafka/broker.sh start`` always formats a fresh run directory, so a restart re-runs
    the recorded java command line of the first start, which keeps the log dirs)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.port = broker.free_port()
        self.controller_port = broker.free_port()
        while self.controller_port == self.port:
            self.controller_port = broker.free_port()
        self.cmdline: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.bootstrap = ""

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "kafka.pid"

    def start(self) -> str:
        self.bootstrap = broker.start(self.port, self.controller_port, self.run_dir)
        pid = int(self.pid_file.read_text().strip())
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        self.cmdline = [a.decode() for a in raw.split(b"\0") if a]
        return self.bootstrap

    def stop(self) -> None:
        broker.stop(self.run_dir)  # SIGTERM: a controlled shutdown
        if self.proc is not None:
            self.proc.wait()
            self.proc = None

    def restart(self, wait_s: float = 120.0) -> float:
        """Start the stopped broker again on its data; returns seconds until it answers."""
        t0 = time.monotonic()
        with open(self.run_dir / "logs" / "kafka.out", "ab") as log:
            self.proc = subprocess.Popen(
                self.cmdline,
                cwd=self.run_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.pid_file.write_text(f"{self.proc.pid}\n")
        broker.wait_ready(self.bootstrap, wait_s)
        return time.monotonic() - t0

    def close(self) -> None:
        with contextlib.suppress(broker.BrokerError):
            self.stop()


def remove_datadir(s: Settings) -> None:
    shutil.rmtree(s.app.datadir, ignore_errors=True)


def wait_for(
    cond: Callable[[], bool], what: str, timeout_s: float = WAIT_S, poll_s: float = 0.2
) -> float:
    t0 = time.monotonic()
    wait_until(
        lambda: cond() or None,
        timeout_s=timeout_s,
        what=what,
        poll_s=poll_s,
        on_timeout=lambda: FaultError(f"{what}: not within {timeout_s:g} s"),
    )
    return time.monotonic() - t0
