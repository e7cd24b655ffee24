"""The group's recent past, from the workers' readings: rates, latency quantiles and cache
figures as time series, summed over every worker of the consumer group.

Rates and quantiles are taken over the readings ``window_s`` apart (a 1 s delta of a histogram
holds too few lists for a p99), from counter and bucket differences, so a worker restart (its
counters back at zero) costs one point, never a negative rate. Memory is bounded by
``history_s / poll_s`` readings per worker and the number of workers seen.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streamrec.dashboard.scrape import Histogram, Reading
from streamrec.events.schema import EVENT_TYPES

MAX_WORKERS = 256  # urls remembered; a worker gone for history_s is forgotten


@dataclass(frozen=True)
class SeriesConfig:
    poll_s: float = 1.0
    history_s: float = 600.0
    window_s: float = 5.0
    histogram_s: float = 60.0  # the latency histogram drawn: the lists of the last minute


def _delta(now: float, then: float) -> float:
    return now if now < then else now - then  # a restart resets counters to zero


def _rate(now: Reading, then: Reading, name: str) -> float:
    dt = now.t - then.t
    return _delta(now.counters.get(name, 0.0), then.counters.get(name, 0.0)) / dt if dt else 0.0


def _since(readings: deque[Reading], seconds: float) -> Reading:
    """The newest reading at least ``seconds`` older than the last (else the oldest)."""
    last = readings[-1]
    for r in reversed(readings):
        if last.t - r.t >= seconds:
            return r
    return readings[0]


def _sum_hist(hists: Iterable[Histogram | None]) -> Histogram | None:
    total: Histogram | None = None
    for h in hists:
        if h is not None:
            total = h if total is None else total.plus(h)
    return total


def _window_hist(pairs: Iterable[tuple[Reading, Reading]], name: str) -> Histogram | None:
    """The observations of histogram ``name`` between each (now, then) pair, summed."""
    return _sum_hist(
        now.histograms[name].minus(then.histograms.get(name))
        for now, then in pairs
        if name in now.histograms
    )


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1e3


class Timeline:
    def __init__(self, cfg: SeriesConfig) -> None:
        self.cfg = cfg
        self._keep = int(cfg.history_s / cfg.poll_s) + 2
        self.readings: dict[str, deque[Reading]] = {}
        self.points: deque[dict[str, Any]] = deque(maxlen=self._keep)

    def add(self, readings: Iterable[Reading]) -> dict[str, Any]:
        """Take one poll's readings (failed ones included: they mark a worker down) and return the
        group's point for it."""
        batch = list(readings)
        for r in batch:
            if r.url not in self.readings and len(self.readings) >= MAX_WORKERS:
                self._forget_oldest()
            self.readings.setdefault(r.url, deque(maxlen=self._keep))
            if r.ok:
                self.readings[r.url].append(r)
        if batch:
            newest = max(r.t for r in batch)
            for url in [
                u
                for u, q in self.readings.items()
                if not q or newest - q[-1].t > self.cfg.history_s
            ]:
                del self.readings[url]
        point = self._point([r.url for r in batch if r.ok], max((r.t for r in batch), default=0.0))
        self.points.append(point)
        return point

    def _forget_oldest(self) -> None:
        url = min(self.readings, key=lambda u: self.readings[u][-1].t if self.readings[u] else 0.0)
        del self.readings[url]

    def _pairs(self, urls: Iterable[str], seconds: float) -> list[tuple[Reading, Reading]]:
        out = []
        for url in urls:
            q = self.readings.get(url)
            if q and len(q) >= 2:
                out.append((q[-1], _since(q, seconds)))
        return out

    def _point(self, urls: list[str], t: float) -> dict[str, Any]:
        pairs = self._pairs(urls, self.cfg.window_s)

        def rate(name: str) -> float:
            return sum(_rate(now, then, name) for now, then in pairs)

        latency = _window_hist(pairs, "event_to_list_seconds")
        batch_s = _window_hist(pairs, "batch_seconds")
        batch_n = _window_hist(pairs, "batch_size")
        reasons: set[str] = set()
        for now, _ in pairs:
            reasons.update(now.rejected)
        dlq = {
            code: sum(
                _delta(now.rejected.get(code, 0.0), then.rejected.get(code, 0.0)) / (now.t - then.t)
                for now, then in pairs
                if now.t > then.t
            )
            for code in sorted(reasons)
        }
        return {
            "t": t,
            "workers_up": len(urls),
            "events_in": {et: rate(f"events_in_{et}") for et in EVENT_TYPES}
            | {"all": rate("events_in")},
            "lists_out": {et: rate(f"lists_out_{et}") for et in EVENT_TYPES}
            | {"all": rate("lists_out")},
            "dlq": dlq,
            "latency_ms": {
                "p50": _ms(latency.quantile(0.5)) if latency else None,
                "p99": _ms(latency.quantile(0.99)) if latency else None,
                "lists": latency.count if latency else 0.0,
            },
            "batch": {
                "p50_ms": _ms(batch_s.quantile(0.5)) if batch_s else None,
                "p99_ms": _ms(batch_s.quantile(0.99)) if batch_s else None,
                "mean_size": batch_n.sum / batch_n.count if batch_n and batch_n.count else None,
                "per_s": batch_n.count / self.cfg.window_s if batch_n else 0.0,
            },
            "encoder": {
                "hits_per_s": self._gauge_rate(pairs, "encoder_cache_hits"),
                "misses_per_s": self._gauge_rate(pairs, "encoder_cache_misses"),
                "reordered_per_s": rate("events_reordered"),
                "released_late_per_s": self._gauge_rate(pairs, "merge_released_late"),
            },
        }

    @staticmethod
    def _gauge_rate(pairs: list[tuple[Reading, Reading]], name: str) -> float:
        # cumulative figures the worker exports as gauges (its cache and merge statistics)
        total = 0.0
        for now, then in pairs:
            dt = now.t - then.t
            if dt > 0:
                total += _delta(now.gauges.get(name, 0.0), then.gauges.get(name, 0.0)) / dt
        return total

    def latency_histogram(self) -> list[tuple[float, float]]:
        """(upper bound in ms, lists) over the last ``histogram_s``, summed over workers."""
        h = _window_hist(self._pairs(self.readings, self.cfg.histogram_s), "event_to_list_seconds")
        return [] if h is None else [(b * 1e3, n) for b, n in h.buckets()]


def worker_view(r: Reading) -> dict[str, Any]:
    """One worker's row: who it is, what it serves, how far behind it is."""
    if not r.ok:
        return {"url": r.url, "ok": False, "error": r.error}
    g, h = r.gauges, r.health
    graph = g.get("retrieval_graph_items", 0.0) > 0
    return {
        "url": r.url,
        "ok": True,
        "status": h.get("status"),
        "fault": h.get("fault"),
        "model_version": h.get("model_version"),
        "catalog_items": h.get("catalog_items"),
        "partitions": r.partitions,
        "uptime_s": h.get("metrics", {}).get("uptime_s"),
        "processing_lag_s": h.get("metrics", {}).get("processing_lag_s"),
        "lag": [[topic, p, n] for (topic, p), n in sorted(r.lag.items())],
        "retrieval": {
            "method": "hnsw graph" if graph else "exact scan",
            "graph_items": int(g.get("retrieval_graph_items", 0.0)),
            "recall_estimate": g.get("retrieval_recall_estimate") if graph else 1.0,
            "ef_search": int(g.get("retrieval_ef_search", 0.0)),
        },
        "encoder_cache": {
            "users": int(g.get("encoder_cache_cached_users", 0.0)),
            "capacity": int(g.get("encoder_cache_capacity", 0.0)),
        },
    }


def list_moves(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> dict[str, Any]:
    """What changed between a user's two lists: each current item's former rank (None: new) and
    the items that left."""
    before = {e["item_id"]: i for i, e in enumerate(previous["items"])} if previous else {}
    now_ids = [e["item_id"] for e in current["items"]]
    return {
        "ranks": [[item, i, before.get(item)] for i, item in enumerate(now_ids)],
        "left": [item for item in before if item not in set(now_ids)],
    }
