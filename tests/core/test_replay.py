"""replay() with a fake producer: topics and keys, pacing schedules, resumable state."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from streamrec.kafka.partitioner import CachedKeyPartitioner
from streamrec.replay import (
    Pacer,
    ReplayError,
    ReplayState,
    ReplayStateError,
    load_state,
    replay,
    save_state,
)
from tests.core.fake_producer import FakeProducer

TOPICS = {"browse": "t.browse", "click": "t.click", "purchase": "t.purchase"}


def events(n: int, users: int = 3) -> list[dict[str, Any]]:
    types = ("browse", "click", "purchase")
    return [
        {
            "event_id": f"e{i}",
            "user_id": f"u{i % users}",
            "item_id": f"i{i % 5}",
            "type": types[i % 3],
            "ts": 1_700_000_000.0 + 10 * i,
        }
        for i in range(n)
    ]


def run(evs: Any, producer: FakeProducer, **kw: Any) -> Any:
    return replay(evs, {}, TOPICS, progress=False, producer_factory=producer.factory, **kw)


def simulate(pacer: Pacer, stamps: list[float], start: float = 100.0) -> list[float]:
    """The waits a pacer asks for when every wait is slept exactly and sending takes no time."""
    now, waits = start, []
    for ts in stamps:
        wait = pacer.delay(now, ts)
        waits.append(wait)
        now += wait
    return waits


# -- sending -------------------------------------------------------------------------------------


def test_events_go_to_their_type_topic_keyed_by_user() -> None:
    evs = events(7)
    p = FakeProducer()
    summary = run(evs, p)
    assert [(t, k) for t, k, _ in p.sent] == [
        (TOPICS[e["type"]], e["user_id"].encode()) for e in evs
    ]
    assert [v for _, _, v in p.sent] == evs
    assert summary.events_sent == 7 and summary.skipped == 0 and p.closed
    assert summary.per_topic == {"t.browse": 3, "t.click": 2, "t.purchase": 2}
    assert p.config["linger_ms"] > 0  # flat out: let batches fill


def test_integer_user_ids_are_keys_and_bad_types_are_refused() -> None:
    p = FakeProducer()
    run([{"event_id": 1, "user_id": 42, "item_id": 7, "type": "click", "ts": 1e9}], p)
    assert p.sent[0][1] == b"42"
    with pytest.raises(ValueError, match=r"event #1: type 'view' has no topic"):
        run([{"event_id": 1, "user_id": "u", "item_id": 7, "type": "view", "ts": 1e9}], p)


def test_retime_stamps_the_send_time_but_paces_by_the_original(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0 + clock[0])
    evs = [
        dict(e, ts=1_700_000_000.0 + dt) for e, dt in zip(events(4), [0, 60, 60, 180], strict=True)
    ]
    p = FakeProducer()
    run(evs, p, time_scale=60.0, retime=True)
    assert slept == [1.0, 2.0]  # 60 s and then 120 s of source time at 60x
    assert [v["ts"] for _, _, v in p.sent] == [
        2_000_001_000.0,
        2_000_001_001.0,
        2_000_001_001.0,
        2_000_001_003.0,
    ]
    assert p.config["linger_ms"] == 0  # paced: send at once
    # every event topic's metadata asked for before the first (stamped) event is sent
    assert p.metadata == [(topic, 0) for topic in TOPICS.values()]


def test_flat_out_replay_does_not_wait_for_metadata_first() -> None:
    p = FakeProducer()
    run(events(4), p)
    assert p.metadata == []  # the sends themselves fetch it; no clock to protect


def test_rate_and_time_scale_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="not both"):
        run(events(1), FakeProducer(), rate=10, time_scale=60)


# -- pacing ----------------------------------------------------------------------------------


def test_rate_pacing_is_an_absolute_schedule() -> None:
    assert simulate(Pacer(rate=4), [0.0] * 5) == [0.0, 0.25, 0.25, 0.25, 0.25]
    # Sending late by less than the lag limit is made up for by shorter waits, not accumulated.
    pacer = Pacer(rate=4)
    assert pacer.delay(10.0) == 0.0
    assert pacer.delay(10.4) == 0.0  # due at 10.25
    assert pacer.delay(10.4) == pytest.approx(0.1)  # due at 10.5


def test_time_scale_follows_source_gaps() -> None:
    stamps = [500.0, 500.0, 800.0, 750.0, 1400.0]
    # 100x: 300 s of source time is 3 s; the small step back (750 was due at 2.5 s) goes at
    # once; 1400 is due 9 s after the start, 6 s after 800.
    assert simulate(Pacer(time_scale=100), stamps) == [0.0, 0.0, 3.0, 0.0, 6.0]


def test_falling_far_behind_restarts_the_schedule() -> None:
    pacer = Pacer(time_scale=10, max_lag_s=1.0)
    assert pacer.delay(0.0, 0.0) == 0.0
    assert pacer.delay(5.0, 10.0) == 0.0  # due at 1.0, 4 s late: restart here
    assert pacer.delay(5.0, 20.0) == pytest.approx(1.0)  # 10 s of source after the restart
    # A big step back in source time (the next user of a file in user order) also restarts.
    assert pacer.delay(6.0, -1000.0) == 0.0
    assert pacer.delay(6.0, -990.0) == pytest.approx(1.0)


def test_pacer_needs_exactly_one_positive_setting() -> None:
    for kw in ({}, {"rate": 1.0, "time_scale": 1.0}, {"rate": 0.0}, {"time_scale": -1.0}):
        with pytest.raises(ValueError):
            Pacer(**kw)


# -- resumable state -----------------------------------------------------------------------------


def test_state_round_trip_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    assert load_state(path) is None
    save_state(path, ReplayState(12, "trivago:40"))
    assert load_state(path) == ReplayState(12, "trivago:40")
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary left behind
    for text in ("{", '{"version": 9, "delivered": 1}', '{"version": 1, "delivered": -2}', "[]"):
        path.write_text(text)
        with pytest.raises(ReplayStateError, match="not a replay state file"):
            load_state(path)


def test_checkpoints_follow_a_flush(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    p = FakeProducer()
    run(events(10), p, state_path=state, checkpoint_every=4)
    assert p.flushes == [4, 8, 10]
    assert load_state(state) == ReplayState(10, "e9")


def test_resume_after_a_delivery_failure_sends_exactly_the_rest(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    evs = events(10)
    first = FakeProducer(fail_at=7)
    with pytest.raises(ReplayError, match="record 7 lost"):
        run(evs, first, state_path=state, checkpoint_every=4)
    # Records 5-8 were handed over but not all delivered: only the flushed prefix counts.
    assert load_state(state) == ReplayState(4, "e3")
    second = FakeProducer()
    summary = run(evs, second, state_path=state, checkpoint_every=4)
    assert second.event_ids == [f"e{i}" for i in range(4, 10)]
    assert (summary.skipped, summary.events_sent, summary.delivered) == (4, 6, 10)
    assert "skipped the first 4 events" in summary.format()
    third = FakeProducer()  # finished: a rerun sends nothing
    assert run(evs, third, state_path=state).events_sent == 0 and third.sent == []


def test_interrupt_records_what_was_handed_over(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    evs = events(10)
    with pytest.raises(KeyboardInterrupt):
        run(evs, FakeProducer(interrupt_at=6), state_path=state, checkpoint_every=100)
    assert load_state(state) == ReplayState(5, "e4")
    rest = FakeProducer()
    run(evs, rest, state_path=state)
    assert rest.event_ids == [f"e{i}" for i in range(5, 10)]


def test_a_state_from_another_sequence_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    save_state(state, ReplayState(3, "e2"))
    p = FakeProducer()
    with pytest.raises(ReplayStateError, match="has id 'x2'"):
        run([dict(e, event_id=f"x{i}") for i, e in enumerate(events(5))], p, state_path=state)
    with pytest.raises(ReplayStateError, match="has only 2"):
        run(events(2), p, state_path=state)
    assert p.sent == []  # refused before anything was sent


# -- partitioning --------------------------------------------------------------------------------


class Cluster:
    def __init__(self, n: int) -> None:
        self.n = n

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n))


def test_cached_partitioner_agrees_with_kafka_default() -> None:
    from kafka.partitioner import DefaultPartitioner

    cached, default = CachedKeyPartitioner(), DefaultPartitioner()
    keys = [f"user-{i}".encode() for i in range(200)]
    for n in (4, 4, 7):  # the second pass is served from the cache; then a partition change
        cluster = Cluster(n)
        assert [cached.partition("t", None, k, None, b"", cluster) for k in keys] == [
            default.partition("t", None, k, None, b"", cluster) for k in keys
        ]
    assert 0 <= cached.partition("t", None, None, None, b"v", Cluster(3)) < 3  # no key: random
