"""The group's time series: rates and quantiles from counter and bucket differences, summed over
workers, a restart costing one point and never a negative rate, memory bounded."""

from __future__ import annotations

import math

from streamrec.dashboard.scrape import Histogram, Reading
from streamrec.dashboard.series import MAX_WORKERS, SeriesConfig, Timeline, list_moves

BOUNDS = (0.01, 0.02, 0.05, math.inf)


def reading(url: str, t: float, events: float, lists: float = 0.0, lat=(0, 0, 0, 0), rejected=None):
    return Reading(
        url,
        t,
        health={"partitions": [0]},
        counters={"events_in": events, "events_in_click": events / 2, "lists_out": lists},
        rejected=rejected or {},
        gauges={"encoder_cache_misses": events / 10},
        histograms={
            "event_to_list_seconds": Histogram(BOUNDS, tuple(map(float, lat)), 0.0, float(lat[-1]))
        },
    )


def test_rates_are_summed_over_workers_over_the_window():
    tl = Timeline(SeriesConfig(poll_s=1.0, history_s=60.0, window_s=2.0))
    for k in range(4):
        point = tl.add([reading("a", 100.0 + k, 10.0 * k), reading("b", 100.0 + k, 30.0 * k)])
    # a: 10/s, b: 30/s, over the last 2 s
    assert point["events_in"]["all"] == 40.0
    assert point["events_in"]["click"] == 20.0
    assert point["encoder"]["misses_per_s"] == 4.0
    assert point["workers_up"] == 2


def test_a_restarted_worker_never_gives_a_negative_rate():
    tl = Timeline(SeriesConfig(poll_s=1.0, history_s=60.0, window_s=1.0))
    tl.add([reading("a", 100.0, 500.0)])
    point = tl.add([reading("a", 101.0, 20.0)])  # counters back near zero
    assert point["events_in"]["all"] == 20.0


def test_latency_quantiles_come_from_the_window_s_lists_only():
    tl = Timeline(SeriesConfig(poll_s=1.0, history_s=60.0, window_s=1.0))
    tl.add([reading("a", 100.0, 0, lat=(100, 100, 100, 100))])  # old: 100 lists under 10 ms
    point = tl.add([reading("a", 101.0, 0, lat=(100, 100, 200, 200))])  # new: 100 in 20-50 ms
    assert 20.0 <= point["latency_ms"]["p50"] <= 50.0
    assert point["latency_ms"]["lists"] == 100
    assert [n for _, n in tl.latency_histogram()] == [0, 0, 100, 0]


def test_dead_letters_by_reason_per_second():
    tl = Timeline(SeriesConfig(poll_s=1.0, history_s=60.0, window_s=2.0))
    tl.add([reading("a", 100.0, 0, rejected={"bad_json": 1})])
    tl.add([reading("a", 101.0, 0, rejected={"bad_json": 3})])
    point = tl.add([reading("a", 102.0, 0, rejected={"bad_json": 5, "missing_field": 2})])
    assert point["dlq"] == {"bad_json": 2.0, "missing_field": 1.0}


def test_a_down_worker_is_not_counted_and_gone_workers_are_forgotten():
    tl = Timeline(SeriesConfig(poll_s=1.0, history_s=10.0, window_s=1.0))
    tl.add([reading("a", 100.0, 0), reading("b", 100.0, 0)])
    point = tl.add([reading("a", 101.0, 10), Reading("b", 101.0, error="refused")])
    assert point["workers_up"] == 1 and point["events_in"]["all"] == 10.0
    tl.add([reading("a", 120.0, 20)])
    assert set(tl.readings) == {"a"}
    many = Timeline(SeriesConfig(poll_s=1.0, history_s=1e6, window_s=1.0))
    for k in range(MAX_WORKERS + 10):
        many.add([reading(f"w{k}", 100.0 + k, 0)])
    assert len(many.readings) == MAX_WORKERS
    assert len(many.points) <= many._keep


def test_list_moves_names_new_risen_fallen_and_left_items():
    prev = {"items": [{"item_id": x} for x in ("a", "b", "c")]}
    cur = {"items": [{"item_id": x} for x in ("c", "a", "d")]}
    moves = list_moves(prev, cur)
    assert moves["ranks"] == [["c", 0, 2], ["a", 1, 0], ["d", 2, None]]
    assert moves["left"] == ["b"]
    assert list_moves(None, cur)["ranks"][0] == ["c", 0, None]
