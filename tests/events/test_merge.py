import random

import pytest

from streamrec.events.merge import EventTimeMerge, Lag, MergeConfig

SOURCES = ("browse", "click", "purchase")


def never(source: str, partition: int) -> Lag:
    return Lag.UNKNOWN


def always(source: str, partition: int) -> Lag:
    return Lag.CAUGHT_UP


def caught_up_if(cond: bool) -> Lag:
    return Lag.CAUGHT_UP if cond else Lag.UNKNOWN


def test_head_waits_until_every_other_topic_has_advanced_past_it() -> None:
    m: EventTimeMerge[str] = EventTimeMerge(SOURCES, MergeConfig(lateness_s=10.0))
    m.push("browse", 0, 5.0, "b5", now=0.0)
    m.push("browse", 0, 7.0, "b7", now=0.0)
    assert m.release(0.0, never) == []  # click and purchase have shown nothing yet
    m.push("click", 0, 6.0, "c6", now=0.0)
    assert m.release(0.0, never) == []  # purchase has not advanced past 5
    m.push("purchase", 0, 9.0, "p9", now=0.0)
    # b5 and c6 are at or before every other topic's newest; b7 waits for click to pass 7
    assert m.release(0.0, never) == ["b5", "c6"]
    m.push("click", 0, 8.0, "c8", now=0.0)
    assert m.release(0.0, never) == ["b7"]  # c8 waits for browse to pass 8
    assert len(m) == 2


def test_a_caught_up_topic_holds_nothing_back() -> None:
    m: EventTimeMerge[str] = EventTimeMerge(SOURCES, MergeConfig(lateness_s=10.0))
    m.push("click", 0, 3.0, "c3", now=0.0)
    m.push("browse", 0, 1.0, "b1", now=0.0)
    # purchase caught up: b1 goes; c3 then waits for browse, which is not
    assert m.release(0.0, lambda s, p: caught_up_if(s == "purchase")) == ["b1"]
    assert m.release(0.0, lambda s, p: caught_up_if(s != "click")) == ["c3"]


def test_lateness_bound_releases_a_head_whatever_the_others_show() -> None:
    m: EventTimeMerge[str] = EventTimeMerge(SOURCES, MergeConfig(lateness_s=0.05))
    m.push("browse", 0, 5.0, "b5", now=100.0)
    assert m.next_deadline() == pytest.approx(100.05)
    assert m.release(100.04, never) == []
    assert m.release(100.06, never) == ["b5"]
    assert m.stats.released_late == 1 and m.stats.released_in_order == 0
    assert m.next_deadline() is None


def test_a_topic_known_to_be_behind_is_waited_for_longer() -> None:
    m: EventTimeMerge[str] = EventTimeMerge(
        SOURCES, MergeConfig(lateness_s=0.05, behind_wait_s=1.0)
    )
    m.push("browse", 0, 5.0, "b5", now=100.0)

    def lag(source: str, partition: int) -> Lag:
        return Lag.BEHIND if source == "click" else Lag.CAUGHT_UP

    assert m.release(100.5, lag) == []  # click has unread records: they are worth waiting for
    assert m.release(100.5, never) == ["b5"]  # unknown positions only get the lateness bound
    m.push("browse", 0, 6.0, "b6", now=100.0)
    assert m.release(101.0, lag) == ["b6"]
    assert m.stats.released_late == 2


def test_partitions_are_independent() -> None:
    m: EventTimeMerge[str] = EventTimeMerge(SOURCES, MergeConfig(lateness_s=10.0))
    m.push("browse", 0, 5.0, "p0-b5", now=0.0)
    m.push("browse", 1, 1.0, "p1-b1", now=0.0)
    # partition 1's click and purchase are caught up; partition 0's are not
    assert m.release(0.0, lambda s, p: caught_up_if(p == 1)) == ["p1-b1"]
    assert m.partitions() == {0}


def test_each_topic_partition_keeps_its_own_order() -> None:
    # a topic partition's records may not be in event time (users interleave); they stay in
    # offset order, and the merge goes by heads
    m: EventTimeMerge[str] = EventTimeMerge(SOURCES, MergeConfig(lateness_s=10.0))
    m.push("browse", 0, 5.0, "b5", now=0.0)
    m.push("browse", 0, 2.0, "b2", now=0.0)
    m.push("click", 0, 3.0, "c3", now=0.0)
    assert m.release(0.0, always) == ["c3", "b5", "b2"]


def test_max_pending_forces_the_oldest_out() -> None:
    m: EventTimeMerge[str] = EventTimeMerge(SOURCES, MergeConfig(lateness_s=10.0, max_pending=3))
    for i, ts in enumerate([4.0, 2.0, 9.0, 1.0, 7.0]):
        m.push("browse" if i % 2 else "click", i % 2, ts, f"e{ts:g}", now=0.0)
    out = m.release(0.0, never)
    assert len(m) == 3 and m.stats.released_forced == 2
    # the oldest head of all goes first (partition 1's browse e2), then the next oldest head
    # (e1, now at partition 1's browse head): each topic partition stays in offset order
    assert out == ["e2", "e1"]


def test_random_streams_come_out_in_event_time_order() -> None:
    """Three topics of one partition, each in event time, read in random chunks: what is
    released before the end is globally ordered, and nothing is lost or repeated."""
    rng = random.Random(7)
    streams = {s: sorted(rng.uniform(0, 1000) for _ in range(300)) for s in SOURCES}
    pos = dict.fromkeys(SOURCES, 0)
    m: EventTimeMerge[tuple[float, str, int]] = EventTimeMerge(SOURCES, MergeConfig(10.0))
    out: list[tuple[float, str, int]] = []
    while any(pos[s] < len(streams[s]) for s in SOURCES):
        s = rng.choice([s for s in SOURCES if pos[s] < len(streams[s])])
        for _ in range(rng.randint(1, 40)):  # a fetch brings a chunk of one topic
            if pos[s] == len(streams[s]):
                break
            ts = streams[s][pos[s]]
            m.push(s, 0, ts, (ts, s, pos[s]), now=0.0)
            pos[s] += 1

        def done(src: str, partition: int) -> Lag:
            return Lag.CAUGHT_UP if pos[src] == len(streams[src]) else Lag.BEHIND

        out += m.release(0.0, done)
    out += m.drain()
    assert len(m) == 0
    assert sorted(out) == sorted((ts, s, i) for s in SOURCES for i, ts in enumerate(streams[s]))
    assert [e[0] for e in out] == sorted(e[0] for e in out)
    assert m.stats.released_late == 0 and m.stats.released_forced == 0


def test_unknown_source_is_refused() -> None:
    m: EventTimeMerge[str] = EventTimeMerge(SOURCES)
    with pytest.raises(ValueError, match="unknown source"):
        m.push("view", 0, 1.0, "x", now=0.0)


def test_removed_items_leave_the_merge_and_the_rest_keep_their_order() -> None:
    m: EventTimeMerge[str] = EventTimeMerge(SOURCES, MergeConfig(lateness_s=10.0))
    for ts, (source, item) in enumerate(
        [("browse", "u1-a"), ("click", "u2-a"), ("browse", "u1-b"), ("purchase", "u2-b")]
    ):
        m.push(source, 0, float(ts), item, now=0.0)
    m.push("click", 1, 9.0, "u1-c", now=0.0)
    gone = m.remove(lambda item: item.startswith("u1"))
    assert sorted(gone) == ["u1-a", "u1-b", "u1-c"]
    assert len(m) == 2
    assert m.release(100.0, always) == ["u2-a", "u2-b"]
    assert len(m) == 0
