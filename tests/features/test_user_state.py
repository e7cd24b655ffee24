import random

from streamrec.events.schema import Event
from streamrec.features.user_state import FeatureLimits, UserState

LIM = FeatureLimits(
    sequence_max=8, dedup_ids=16, purchased_max=3, windows_s=(3600, 86400), window_buckets=12
)


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
    for x in events[-10:]:  # within the dedup memory
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
    assert len(s.recent_ids) <= LIM.dedup_ids


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


def test_bytes_roundtrip_and_size_bounded():
    s = UserState()
    for i in range(500):
        s.apply(e(i, random.Random(i).choice(["browse", "click", "purchase"])), LIM)
    raw = s.to_bytes()
    back = UserState.from_bytes(raw)
    assert back == s
    assert len(raw) < 4096
