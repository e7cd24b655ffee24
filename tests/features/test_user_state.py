import dataclasses
import random

import pytest

from streamrec.events.schema import Event
from streamrec.features.user_state import FeatureLimits, UserState, last_activity

LIM = FeatureLimits(sequence_max=8, purchased_max=3, windows_s=(3600, 86400), window_buckets=12)


def e(i, etype="click", item=None, ts=None, user="u"):
    return Event(f"e{i}", user, item or f"i{i}", etype, ts if ts is not None else 1.7e9 + i * 60)


def test_apply_counts_and_dedup():
    s = UserState()
    assert s.apply(e(1), LIM)
    assert s.apply(e(2, "purchase", item="x"), LIM)
    assert not s.apply(e(1), LIM)  # redelivered
    assert s.n_events == 2
    assert s.counts == [0, 1, 1]
    assert s.purchased == ["x"]


def test_replay_of_the_same_log_changes_nothing():
    events = [e(i, random.Random(i).choice(["browse", "click", "purchase"])) for i in range(12)]
    s = UserState()
    for x in events:
        s.apply(x, LIM)
    snapshot = s.to_bytes()
    for x in events:  # the whole log again, older than the kept sequence included
        assert not s.apply(x, LIM)
    assert s.to_bytes() == snapshot


def test_sequence_bounded_and_gaps_kept_at_the_cut():
    s = UserState()
    for i in range(20):
        s.apply(e(i, ts=1.7e9 + i * i), LIM)
    assert len(s.seq) == LIM.sequence_max
    items, _types, gaps = s.tail(8)
    assert items == [f"i{i}" for i in range(12, 20)]
    # the first kept event still knows its gap to the (dropped) predecessor
    assert gaps == [float(i * i - (i - 1) * (i - 1)) for i in range(12, 20)]


def test_first_event_gap_is_negative():
    s = UserState()
    s.apply(e(0), LIM)
    assert s.tail(4)[2] == [-1.0]


def test_purchased_bounded_most_recent_kept():
    s = UserState()
    for i in range(5):
        s.apply(e(i, "purchase"), LIM)
    assert s.purchased == ["i2", "i3", "i4"]


def test_rolling_windows():
    s = UserState()
    t0 = 1.7e9
    s.apply(e(1, "click", ts=t0), LIM)
    s.apply(e(2, "click", ts=t0 + 1800), LIM)
    s.apply(e(3, "browse", ts=t0 + 7200), LIM)
    # at t0+7200 the hour window holds only the browse; the day window holds all three
    assert s.window_counts(3600, t0 + 7200, LIM) == [1, 0, 0]
    assert s.window_counts(86400, t0 + 7200, LIM) == [1, 2, 0]
    s.apply(e(4, "purchase", ts=t0 + 2 * 86400), LIM)
    assert s.window_counts(86400, t0 + 2 * 86400, LIM) == [0, 0, 1]


def test_bytes_roundtrip_and_size_bounded_at_default_limits():
    lim = FeatureLimits()  # the shipped defaults, every limit filled
    rnd = random.Random(0)
    s = UserState()
    for i in range(2000):
        etype = rnd.choice(["browse", "click", "purchase"])
        s.apply(
            Event(
                f"evt-{i:010d}-{rnd.random()}",
                "u",
                f"item{rnd.randrange(10**6)}",
                etype,
                1.7e9 + 37.5 * i,
            ),
            lim,
        )
    assert len(s.seq) == lim.sequence_max and len(s.purchased) == lim.purchased_max
    raw = s.to_bytes()
    assert UserState.from_bytes(raw) == s
    assert len(raw) < 4608  # 4.3 KB: the 50 purchases carry their times for retention


def test_corrupt_records_are_refused():
    s = UserState()
    s.apply(e(1), LIM)
    raw = s.to_bytes()
    for bad in (raw[:-3], raw + b"x", b"XX" + raw[2:]):
        try:
            UserState.from_bytes(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_replayed_events_older_than_the_kept_sequence_are_not_counted():
    s = UserState()
    for i in range(20):
        s.apply(e(i, "click", ts=1.7e9 + 100 * i), LIM)
    # a new id on the click topic, but older than the clicks already trimmed: taken as a replay
    assert not s.apply(Event("brand-new", "u", "ix", "click", 1.7e9 + 100 * 5), LIM)
    # the browse topic is consumed independently: an older browse is still new
    assert s.apply(Event("brand-new-2", "u", "iy", "browse", 1.7e9 + 100 * 5), LIM)
    # out of order but newer than the trimmed clicks: counted
    assert s.apply(Event("brand-new-3", "u", "iz", "click", 1.7e9 + 100 * 15 + 1), LIM)
    assert s.n_events == 22


def test_long_ids_roundtrip():
    s = UserState()
    s.apply(Event("e-long", "u", "é" * 300, "purchase", 1.7e9), LIM)
    assert UserState.from_bytes(s.to_bytes()) == s


def test_recent_events_build_the_same_tail_lazily_at_every_length():
    rng = random.Random(3)
    s = UserState()
    for i in range(20):
        s.apply(e(i, rng.choice(["browse", "click", "purchase"]), ts=1.7e9 + i * i), LIM)
        for n in (1, 2, 5, 8, 30):
            recent = s.recent(n)
            start = max(0, len(s.seq) - n)
            want_gaps = [
                s.last_gap if k == 0 else s.seq[k][2] - s.seq[k - 1][2]
                for k in range(start, len(s.seq))
            ]
            items, types, gaps = recent.tail()
            assert items == [x[0] for x in s.seq[start:]]
            assert types == [x[1] for x in s.seq[start:]]
            assert gaps == want_gaps
            assert len(recent) == len(items)
            assert recent.newest() == (items[-1], types[-1], gaps[-1])


def test_events_read_out_of_time_order_are_kept_in_event_time():
    s = UserState()
    for i in (0, 1, 4, 2, 3, 5):  # a later event was read before two earlier ones
        assert s.apply(e(i, ts=1.7e9 + 60 * i), LIM)
    assert [x[0] for x in s.seq] == [f"i{i}" for i in range(6)]
    assert s.tail(8)[2] == [-1.0] + [60.0] * 5
    assert not s.apply(e(2, ts=1.7e9 + 120), LIM)  # still recognised when redelivered
    assert s.is_last_applied(e(5, ts=1.7e9 + 300)) and not s.is_last_applied(e(3, ts=1.7e9 + 180))


def test_records_round_trip_and_version_1_records_are_still_read():
    s = UserState()
    for i in (0, 2, 1):
        s.apply(e(i, "purchase" if i == 1 else "click"), LIM)
    back = UserState.from_bytes(s.to_bytes())
    assert back == s and back.is_last_applied(e(1))
    u2 = b"U2" + s.to_bytes()[2 : -8 * (len(s.purchased) + 1)]  # before purchase times
    old2 = UserState.from_bytes(u2)
    # the purchase time comes from its kept event; nothing had expired yet
    assert old2 == dataclasses.replace(s, horizon=float("-inf"))
    assert old2.purchased_ts == [e(1).ts]
    # a U1 record (before last_applied was stored): the newest kept event stands in for it
    v1 = b"U1" + u2[2:-8]
    old = UserState.from_bytes(v1)
    assert old.seq == s.seq and old.last_applied == s.seq[-1][3]
    assert last_activity(v1) == last_activity(s.to_bytes()) == s.last_ts


DAY = 86400.0
RET = dataclasses.replace(LIM, retention_s=2 * DAY)


def test_retention_drops_what_is_older_than_it_before_the_newest_event():
    t0 = 1.7e9
    s = UserState()
    s.apply(e(1, "click", item="a", ts=t0), RET)
    s.apply(e(2, "purchase", item="p", ts=t0 + 60), RET)
    s.apply(e(3, "browse", item="b", ts=t0 + DAY), RET)
    assert s.counts == [1, 1, 1] and s.purchased == ["p"] and s.expired == 0
    s.apply(e(4, "click", item="c", ts=t0 + 2 * DAY + 120), RET)  # a and p are past 2 days
    assert [x[0] for x in s.seq] == ["b", "c"]
    assert s.counts == [1, 1, 0]  # browse b, click c: the old click and the purchase are gone
    assert s.purchased == [] and s.purchased_ts == []
    assert s.expired == 2 and s.last_gap == -1.0  # no trace of the dropped predecessor's time
    assert s.first_ts == t0 + 120 and s.n_events == 4
    # the day window's buckets of the dropped events went with them
    assert all((b + 1) * (DAY / 12) > t0 + 120 for b in s.windows[1])
    # a redelivery of a dropped event is still a duplicate: it does not come back
    assert not s.apply(e(1, "click", item="a", ts=t0), RET)
    assert not s.apply(e(2, "purchase", item="p", ts=t0 + 60), RET)
    assert s.expired == 0
    back = UserState.from_bytes(s.to_bytes())
    assert back == s and back.horizon == t0 + 120


def test_retention_counts_become_exact_once_the_cutoff_passes_the_floor():
    # 20 clicks an hour apart: 12 leave the 8-event sequence; with a 2-day retention none has
    # expired, so the count keeps them all
    s = UserState()
    t0 = 1.7e9
    for i in range(20):
        s.apply(e(i, "click", ts=t0 + 3600 * i), RET)
    assert s.counts[1] == 20 and len(s.seq) == 8
    # a day later than all of them plus two: every click but the kept ones is past the cutoff
    s.apply(e(99, "browse", ts=t0 + 3600 * 19 + 2 * DAY - 3600 * 3), RET)
    kept_clicks = sum(1 for x in s.seq if x[1] == 1)
    assert s.counts == [1, kept_clicks, 0]
    assert kept_clicks == 4  # hours 16..19 are within two days of the newest event


def test_an_event_older_than_the_retention_is_counted_and_dropped_at_once():
    t0 = 1.7e9
    s = UserState()
    s.apply(e(1, "click", ts=t0 + 5 * DAY), RET)
    assert s.apply(e(2, "browse", ts=t0), RET)  # new, but older than the retention
    assert len(s.seq) == 1 and s.counts == [0, 1, 0] and s.expired == 1
    assert not s.apply(e(2, "browse", ts=t0), RET)  # and its redelivery stays out


def test_without_retention_nothing_expires():
    s = UserState()
    s.apply(e(1, "purchase", item="p", ts=1.7e9), LIM)
    s.apply(e(2, ts=1.7e9 + 400 * DAY), LIM)
    assert s.purchased == ["p"] and len(s.seq) == 2 and s.counts == [0, 1, 1]


def test_last_activity_refuses_what_is_not_a_record():
    with pytest.raises(ValueError):
        last_activity(b"XX" + bytes(40))
