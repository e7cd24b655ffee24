"""One reading of one worker: its /health/ JSON and its /metrics/ Prometheus text, parsed.

The dashboard reads what Prometheus would read, through the same endpoints, so what it draws is
what an operator's alerting sees; it adds nothing to the worker's hot path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

PREFIX = "streamrec_"


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts at upper bounds (the last bound is +Inf), their sum and count."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    sum: float
    count: float

    def minus(self, earlier: Histogram | None) -> Histogram:
        """The observations made since ``earlier`` (a restart resets it: then all of these)."""
        if earlier is None or earlier.bounds != self.bounds or earlier.count > self.count:
            return self
        return Histogram(
            self.bounds,
            tuple(a - b for a, b in zip(self.cumulative, earlier.cumulative, strict=True)),
            self.sum - earlier.sum,
            self.count - earlier.count,
        )

    def plus(self, other: Histogram) -> Histogram:
        if other.bounds != self.bounds:
            raise ValueError("histograms with different buckets cannot be added")
        return Histogram(
            self.bounds,
            tuple(a + b for a, b in zip(self.cumulative, other.cumulative, strict=True)),
            self.sum + other.sum,
            self.count + other.count,
        )

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket the rank falls in, as Prometheus'
        ``histogram_quantile`` does; None without observations. A rank in the +Inf bucket gives
        the highest finite bound."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound, cum in zip(self.bounds, self.cumulative, strict=True):
            if cum >= rank:
                if math.isinf(bound):
                    return lower
                inside = cum - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
            lower, below = bound, cum
        return lower

    def buckets(self) -> list[tuple[float, float]]:
        """(upper bound, observations in that bucket alone)."""
        out, below = [], 0.0
        for bound, cum in zip(self.bounds, self.cumulative, strict=True):
            out.append((bound, cum - below))
            below = cum
        return out


@dataclass(frozen=True)
class Reading:
    """What one worker reported at wall time ``t``; ``error`` says why nothing was read."""

    url: str
    t: float
    health: Mapping[str, Any] = field(default_factory=dict)
    counters: Mapping[str, float] = field(default_factory=dict)
    rejected: Mapping[str, float] = field(default_factory=dict)
    gauges: Mapping[str, float] = field(default_factory=dict)
    lag: Mapping[tuple[str, int], float] = field(default_factory=dict)
    histograms: Mapping[str, Histogram] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def partitions(self) -> list[int]:
        return [int(p) for p in self.health.get("partitions", [])]


def parse_metrics(text: str) -> dict[str, Any]:
    """Counters (without the ``streamrec_`` prefix and ``_total`` suffix), rejections by reason,
    gauges, consumer lag by (topic, partition) and histograms of a worker's /metrics/ text."""
    counters: dict[str, float] = {}
    rejected: dict[str, float] = {}
    gauges: dict[str, float] = {}
    lag: dict[tuple[str, int], float] = {}
    histograms: dict[str, Histogram] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX):
            continue
        name = family.name.removeprefix(PREFIX)
        if family.type == "histogram":
            buckets = sorted(
                (float(s.labels["le"]), s.value)
                for s in family.samples
                if s.name.endswith("_bucket")
            )
            total = {s.name.rsplit("_", 1)[-1]: s.value for s in family.samples}
            histograms[name] = Histogram(
                tuple(b for b, _ in buckets),
                tuple(v for _, v in buckets),
                float(total.get("sum", 0.0)),
                float(total.get("count", 0.0)),
            )
        elif name == "events_rejected_by_reason":
            for s in family.samples:
                if s.name.endswith("_total"):
                    rejected[s.labels["reason"]] = s.value
        elif name == "consumer_lag_records":
            for s in family.samples:
                lag[(s.labels["topic"], int(s.labels["partition"]))] = s.value
        elif family.type == "counter":
            for s in family.samples:
                if s.name.endswith("_total"):
                    counters[name] = s.value
        elif family.type == "gauge":
            for s in family.samples:
                gauges[name] = s.value
    return {
        "counters": counters,
        "rejected": rejected,
        "gauges": gauges,
        "lag": lag,
        "histograms": histograms,
    }
