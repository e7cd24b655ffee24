"""Prequential scoring on hand-computed cases (streamrec.online.scoring)."""

from __future__ import annotations

import math

import pytest

from streamrec.online.scoring import (
    CLICK_VIEW,
    PURCHASE,
    EmittedList,
    ListHistory,
    Tally,
    Target,
    beyond_accuracy,
    format_table,
    frozen,
    histories,
    index_events,
    lift,
    live,
    processing_order,
    score,
)


def ev(eid: str, user: str, item: str, ts: float, etype: str = "click") -> dict[str, object]:
    return {"event_id": eid, "user_id": user, "item_id": item, "ts": ts, "type": etype}


def rec(eid: str, user: str, *items: str) -> dict[str, object]:
    return {
        "event_id": eid,
        "user_id": user,
        "items": [{"item_id": i, "score": 0.0} for i in items],
    }


def test_index_events_positions_and_targets() -> None:
    events = [
        ev("e0", "u", "a", 1),
        ev("e1", "v", "b", 2),
        ev("e2", "u", "c", 10, "purchase"),
        ev("e3", "u", "d", 11, "browse"),
    ]
    r = index_events(events, split_ts=10)
    assert r.position_of == {"e0": ("u", 0), "e1": ("v", 0), "e2": ("u", 1), "e3": ("u", 2)}
    assert r.targets == [Target("u", 1, "c", PURCHASE), Target("u", 2, "d", CLICK_VIEW)]
    again = index_events([*events, ev("e4", "u", "c", 12, "purchase")], split_ts=10)
    assert again.targets[-1] == Target("u", 3, "c", PURCHASE, bought_before=True)
    assert r.first_target == {"u": 1}


def test_before_takes_the_last_list_strictly_before_the_position() -> None:
    h = ListHistory([EmittedList(0, ("x",)), EmittedList(2, ("y",)), EmittedList(3, ("z",))])
    assert h.before(0) is None
    assert h.before(1) == EmittedList(0, ("x",))
    assert h.before(3) == EmittedList(2, ("y",))  # the list after event 3 is not "before" it
    assert h.before(9) == EmittedList(3, ("z",))
    assert h.reordered == 0


def test_before_skips_lists_emitted_after_a_later_event_was_processed() -> None:
    # Event 3 was processed before event 1 (another topic ran ahead): the list named after 1
    # was built from a state that already held 3, so it must not count as shown before 3 or 2.
    h = ListHistory([EmittedList(0, ("a",)), EmittedList(3, ("b",)), EmittedList(1, ("c",))])
    assert h.reordered == 1
    assert h.before(2) == EmittedList(0, ("a",))
    assert h.before(3) == EmittedList(0, ("a",))
    assert h.before(4) == EmittedList(1, ("c",))  # the newest list once everything is in


def test_tally_hits_and_ndcg_by_rank() -> None:
    t = Tally()
    items = [f"i{r}" for r in range(20)]
    t.add(items, "i0")  # rank 0: gain 1
    t.add(items, "i12")  # rank 12: a hit at 20 only, gain 1/log2(14)
    t.add(items, "nope")
    t.add(None, "i0")  # no list shown: a miss
    assert t.n == 4
    assert t.hr(10) == pytest.approx(1 / 4)
    assert t.hr(20) == pytest.approx(2 / 4)
    assert t.ndcg(10) == pytest.approx(1 / 4)
    assert t.ndcg(20) == pytest.approx((1 + 1 / math.log2(14)) / 4)


def test_live_frozen_and_warm_users_end_to_end() -> None:
    # u: two fit events, then two evaluation events; w: only evaluation events (cold: skipped)
    events = [
        ev("u0", "u", "a", 1),
        ev("u1", "u", "b", 2),
        ev("u2", "u", "c", 10),
        ev("u3", "u", "d", 11, "purchase"),
        ev("w0", "w", "c", 12),
        ev("w1", "w", "c", 13),
    ]
    r = index_events(events, split_ts=10)
    published = [
        rec("u0", "u", "a"),
        rec("u1", "u", "x", "c"),  # before the window: the frozen list
        rec("u2", "u", "d", "c"),  # after c: shown before d
        rec("u3", "u", "z"),
        rec("w0", "w", "c"),
        rec("other:1", "u", "c"),  # not an event of this log: ignored
    ]
    hist = histories(published, r.position_of)
    systems = {"live": live(hist), "frozen": frozen(hist, r.first_target)}
    t = score(r.targets, systems, warm=systems["frozen"])
    # u's targets: c at 2 (live shows [x c] -> rank 1; frozen the same) and d at 3 (live shows
    # [d c] -> rank 0; frozen [x c] -> miss). w has no list before its window: not counted.
    assert t["live"][CLICK_VIEW].n == 1 and t["live"][PURCHASE].n == 1
    assert t["live"][CLICK_VIEW].hr(10) == 1 and t["frozen"][CLICK_VIEW].hr(10) == 1
    assert t["live"][CLICK_VIEW].ndcg(10) == pytest.approx(1 / math.log2(3))
    assert t["live"][PURCHASE].hr(20) == 1 and t["frozen"][PURCHASE].hr(20) == 0
    assert lift(t, PURCHASE, "live", "frozen") is None  # frozen scored nothing
    assert lift(t, CLICK_VIEW, "live", "frozen") == pytest.approx(0.0)
    table = format_table(t, "live", "frozen")
    assert "| live | purchase | 1 | 0.0% | 1.0000 |" in table


def test_lift_is_relative_hr_at_20() -> None:
    a, b = Tally(), Tally()
    for hit in (True, True, False, False):
        a.add(["t"] if hit else ["x"], "t")
    for hit in (True, False, False, False):
        b.add(["t"] if hit else ["x"], "t")
    tallies = {"live": {CLICK_VIEW: a}, "frozen": {CLICK_VIEW: b}}
    assert lift(tallies, CLICK_VIEW, "live", "frozen") == pytest.approx(1.0)  # 0.5 vs 0.25


def test_processing_order_catches_events_coalesced_out_of_order() -> None:
    # Sequence 0 1 2 3; the app processed 0, then 2 before 1 in one batch (one list, named after
    # 1, its last event), then 3. The list named after 1 holds event 2: not shown "before" 2.
    lists = [EmittedList(0, ("a",)), EmittedList(1, ("b",)), EmittedList(3, ("c",))]
    blind = ListHistory(lists)
    assert blind.before(2) == EmittedList(1, ("b",))  # what emission order alone concludes
    exact = ListHistory(lists, processed=[0, 2, 1, 3])
    assert exact.reordered == 1
    assert exact.before(2) == EmittedList(0, ("a",))
    assert exact.before(3) == EmittedList(1, ("b",))  # everything up to 2 was in by then


def test_processing_order_from_applied_hashes() -> None:
    by_hash = {("u", 11): 0, ("u", 12): 1, ("v", 13): 0}
    applied = [("u", 12), ("v", 13), ("u", 11), ("u", 99)]  # 99: not an event of this log
    assert processing_order(applied, by_hash) == {"u": [1, 0], "v": [0]}


def test_beyond_accuracy_of_the_lists_shown_at_the_targets() -> None:
    t = Tally()
    t.add([f"i{r}" for r in range(15)], "i0")  # only the top 10 count
    t.add(["i0", "j1"], "nope")
    t.add(None, "i0")  # nothing shown: no list to measure
    assert t.shown == [tuple(f"i{r}" for r in range(10)), ("i0", "j1")]
    cats = {f"i{r}": f"c{r % 2}" for r in range(15)} | {"j1": "c9"}
    got = beyond_accuracy({"live": {"purchase": t}}, cats, {"i0": 3, "j1": 1}, 100)
    m = got["live"]["purchase"]
    assert m["categories"] == pytest.approx((2 + 2) / 2)
    assert m["coverage"] == pytest.approx(11 / 100)
    # novelty: -log2(share) with unseen items counted once, over the 12 listed items
    share = {"i0": 3 / 4, "j1": 1 / 4}
    want = [-math.log2(share.get(i, 1 / 4)) for items in t.shown for i in items]
    assert m["novelty"] == pytest.approx(sum(want) / len(want))
    table = format_table({"live": {"purchase": t, "click/view": Tally()}}, "live", "live", got)
    assert "| categories@10 |" in table and "| 2.0000 |" in table
