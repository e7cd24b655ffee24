"""The dashboard reads a worker's /metrics/ text back into numbers: what streams.metrics writes,
streamrec.dashboard.scrape parses, quantiles included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrec.dashboard.scrape import Histogram, parse_metrics
from streams.metrics import LATENCY_BUCKETS_S, Metrics


def _exposition() -> tuple[bytes, list[float]]:
    m = Metrics()
    m.inc("events_in", 7)
    m.inc("events_in_click", 5)
    m.inc("lists_out", 3)
    m.reject("bad_json")
    m.reject("bad_json")
    m.reject("missing_field")
    rng = np.random.default_rng(0)
    delays = list(rng.uniform(0.004, 0.04, size=500))
    for d in delays:
        m.latency(1000.0, 1000.0 + d)
    text = m.prometheus({"encoder_cache_hits": 11.0}, [("t.click", 1, 42)])
    return text, delays


def test_counters_gauges_lag_and_rejections_come_back_as_written():
    text, _ = _exposition()
    got = parse_metrics(text.decode())
    assert got["counters"]["events_in"] == 7
    assert got["counters"]["events_in_click"] == 5
    assert got["counters"]["lists_out"] == 3
    assert got["rejected"] == {"bad_json": 2, "missing_field": 1}
    assert got["gauges"]["encoder_cache_hits"] == 11.0
    assert got["lag"] == {("t.click", 1): 42}
    assert "events_rejected_by_reason" not in got["counters"]


def test_the_latency_histogram_gives_quantiles_inside_the_true_bucket():
    text, delays = _exposition()
    h = parse_metrics(text.decode())["histograms"]["event_to_list_seconds"]
    assert h.count == len(delays)
    assert h.bounds[:-1] == LATENCY_BUCKETS_S and math.isinf(h.bounds[-1])
    for q in (0.5, 0.99):
        true = float(np.quantile(delays, q))
        est = h.quantile(q)
        # the estimate lies in the same bucket as the true quantile
        edges = (0.0, *LATENCY_BUCKETS_S)
        bucket = next(i for i, b in enumerate(LATENCY_BUCKETS_S) if true <= b)
        assert edges[bucket] <= est <= edges[bucket + 1], (q, true, est)


def test_histogram_differences_and_sums():
    bounds = (1.0, 2.0, math.inf)
    a = Histogram(bounds, (1.0, 3.0, 4.0), 6.0, 4.0)
    b = Histogram(bounds, (3.0, 6.0, 8.0), 12.0, 8.0)
    d = b.minus(a)
    assert d.cumulative == (2.0, 3.0, 4.0) and d.count == 4.0
    assert b.minus(Histogram(bounds, (9.0, 9.0, 9.0), 1.0, 9.0)) is b  # a restart: all of b
    assert a.plus(a).count == 8.0
    assert d.buckets() == [(1.0, 2.0), (2.0, 1.0), (math.inf, 1.0)]
    assert Histogram(bounds, (0.0, 0.0, 0.0), 0.0, 0.0).quantile(0.5) is None
    # all observations past the last finite bound: the highest finite bound, as Prometheus says
    assert Histogram(bounds, (0.0, 0.0, 5.0), 50.0, 5.0).quantile(0.99) == 2.0
    with pytest.raises(ValueError):
        a.plus(Histogram((1.0, math.inf), (0.0, 0.0), 0.0, 0.0))
