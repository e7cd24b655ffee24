from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from streams.metrics import LIVE_S, Metrics


def families(m: Metrics, **kw):
    text = m.prometheus(**kw).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_exposition_has_types_histograms_and_labels() -> None:
    m = Metrics()
    m.inc("events_in", 3)
    m.reject("bad_json")
    m.batch(8, 0.004)
    m.latency(1000.0, 1000.003)
    f = families(m, gauges={"catalog_items": 5.0}, consumer_lag=[("t.click", 0, 7)])
    assert f["streamrec_events_in"].type == "counter"
    assert f["streamrec_events_in"].samples[0].value == 3
    assert f["streamrec_catalog_items"].type == "gauge"
    hist = f["streamrec_event_to_list_seconds"]
    assert hist.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets["0.002"] == 0 and buckets["0.005"] == 1 and buckets["+Inf"] == 1
    assert f["streamrec_batch_size"].type == "histogram"
    (reason,) = f["streamrec_events_rejected_by_reason"].samples
    assert reason.labels == {"reason": "bad_json"} and reason.value == 1
    (lag,) = f["streamrec_consumer_lag_records"].samples
    assert lag.labels == {"topic": "t.click", "partition": "0"} and lag.value == 7


def test_old_events_are_backlog_not_latency_and_show_as_processing_lag() -> None:
    m = Metrics()
    week = 7 * 86400.0
    m.applied(2e9 - week)
    m.latency(2e9 - week, 2e9)  # a replay of last week's log
    m.latency(2e9 - LIVE_S / 2, 2e9)
    f = families(m, gauges={})
    count = [s for s in f["streamrec_event_to_list_seconds"].samples if s.name.endswith("_count")]
    assert count[0].value == 1
    assert m.counters["lists_for_backlog_events"] == 1
    assert m.processing_lag_s(now=2e9) == week
    assert m.snapshot()["event_to_list_ms"]["p50"] == LIVE_S / 2 * 1e3


def test_scraping_twice_gives_the_same_series() -> None:
    m = Metrics()
    m.inc("x")
    a = families(m, gauges={"g": 1.0})
    b = families(m, gauges={"g": 1.0})
    assert set(a) == set(b)
