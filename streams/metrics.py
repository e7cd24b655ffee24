"""Worker metrics: Prometheus exposition at /metrics/ (prometheus-client), and a JSON snapshot with
recent percentiles for people at /health/.

Latency and batch time are **histograms**, so they sum across workers (Prometheus'
``histogram_quantile`` over ``rate(..._bucket)``), which per-process quantiles cannot. Two kinds
of delay are told apart:

- ``streamrec_event_to_list_seconds``: event time to list, for **live** events only (at most
  ``LIVE_S`` old when their list goes out). A replay of last week's log would otherwise report
  a week per list;
- ``streamrec_processing_lag_seconds``: now minus the newest event time applied, with
  ``streamrec_consumer_lag_records{topic,partition}``: how far behind the worker is, live or not.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# (the exposition is ASCII; aiohttp refuses a charset in content_type)
CONTENT_TYPE = "text/plain; version=0.0.4"
LIVE_S = 60.0  # an event older than this when its list goes out is backlog, not live traffic
LATENCY_BUCKETS_S = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
BATCH_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self, window: int = 10_000) -> None:
        self.started = time.time()
        self.counters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.newest_applied_ts: float | None = None
        # recent samples, for the human-readable percentiles of /health/ only
        self._latency_ms: deque[float] = deque(maxlen=window)
        self._batch_ms: deque[float] = deque(maxlen=window)
        self._batch_size: deque[int] = deque(maxlen=window)
        # No auto-describe: it would collect every per-scrape snapshot twice to check its names.
        self.registry = CollectorRegistry(auto_describe=False)
        self._latency = Histogram(
            "streamrec_event_to_list_seconds",
            f"Event time to list published, for live events (at most {LIVE_S:g} s old).",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._batch_s = Histogram(
            "streamrec_batch_seconds",
            "Model work (encode, retrieve, rank) per micro-batch.",
            buckets=BATCH_BUCKETS_S,
            registry=self.registry,
        )
        self._batch_n = Histogram(
            "streamrec_batch_size",
            "Lists per micro-batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def reject(self, code: str) -> None:
        self.counters["events_rejected"] += 1
        self.rejected[code] += 1

    def batch(self, size: int, seconds: float) -> None:
        self._batch_ms.append(seconds * 1e3)
        self._batch_size.append(size)
        self._batch_s.observe(seconds)
        self._batch_n.observe(size)

    def applied(self, event_ts: float) -> None:
        if self.newest_applied_ts is None or event_ts > self.newest_applied_ts:
            self.newest_applied_ts = event_ts

    def latency(self, event_ts: float, emitted_at: float) -> None:
        delay = emitted_at - event_ts
        if delay > LIVE_S:
            self.counters["lists_for_backlog_events"] += 1
            return
        self._latency_ms.append(delay * 1e3)
        self._latency.observe(max(0.0, delay))

    @staticmethod
    def _pct(values: deque[float] | deque[int], qs: tuple[float, ...]) -> dict[str, float]:
        if not values:
            return {}
        arr = np.fromiter(values, dtype=np.float64)
        return {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}

    def processing_lag_s(self, now: float | None = None) -> float | None:
        if self.newest_applied_ts is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.newest_applied_ts)

    def snapshot(self) -> dict[str, object]:
        return {
            "uptime_s": time.time() - self.started,
            "counters": dict(self.counters),
            "rejected": dict(self.rejected),
            "event_to_list_ms": self._pct(self._latency_ms, (50, 99, 99.9)),
            "batch_ms": self._pct(self._batch_ms, (50, 99)),
            "batch_size": self._pct(self._batch_size, (50, 99)),
            "processing_lag_s": self.processing_lag_s(),
        }

    def prometheus(
        self,
        gauges: Mapping[str, float],
        consumer_lag: Iterable[tuple[str, int, int]] = (),
    ) -> bytes:
        """The exposition text: counters, gauges and histograms with their # HELP / # TYPE."""
        extra = _Snapshot(self, gauges, list(consumer_lag))
        self.registry.register(extra)
        try:
            return generate_latest(self.registry)
        finally:
            self.registry.unregister(extra)


class _Snapshot(Collector):
    """The counters and gauges as they are at one scrape."""

    def __init__(
        self, m: Metrics, gauges: Mapping[str, float], lag: list[tuple[str, int, int]]
    ) -> None:
        self.m, self.gauges, self.lag = m, gauges, lag

    def collect(self) -> Iterator[Metric]:
        for name, value in sorted(self.m.counters.items()):
            yield CounterMetricFamily(f"streamrec_{name}", f"Count of {name}.", value=value)
        by_reason = CounterMetricFamily(
            "streamrec_events_rejected_by_reason",
            "Events dead-lettered, by reason code (docs/events.md).",
            labels=["reason"],
        )
        for code, value in sorted(self.m.rejected.items()):
            by_reason.add_metric([code], value)
        yield by_reason
        for name, level in sorted(self.gauges.items()):
            yield GaugeMetricFamily(f"streamrec_{name}", f"{name} now.", value=level)
        lag_s = self.m.processing_lag_s()
        if lag_s is not None:
            yield GaugeMetricFamily(
                "streamrec_processing_lag_seconds",
                "Now minus the newest event time applied (backlog or replay included).",
                value=lag_s,
            )
        lag = GaugeMetricFamily(
            "streamrec_consumer_lag_records",
            "Records on the broker not yet read, per event-topic partition this worker owns.",
            labels=["topic", "partition"],
        )
        for topic, partition, records in self.lag:
            lag.add_metric([topic, str(partition)], records)
        yield lag
        yield GaugeMetricFamily(
            "streamrec_uptime_seconds", "Seconds since the worker started.",
            value=time.time() - self.m.started,
        )  # fmt: skip
