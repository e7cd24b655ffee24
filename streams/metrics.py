"""Worker counters and latency percentiles, exposed at /metrics (Prometheus text format)."""

from __future__ import annotations

import time
from collections import Counter, deque

import numpy as np


class Metrics:
    def __init__(self, window: int = 10_000) -> None:
        self.started = time.time()
        self.counters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._latency_ms: deque[float] = deque(maxlen=window)  # event time -> list published
        self._batch_ms: deque[float] = deque(maxlen=window)  # model work per batch
        self._batch_size: deque[int] = deque(maxlen=window)

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def reject(self, code: str) -> None:
        self.counters["events_rejected"] += 1
        self.rejected[code] += 1

    def batch(self, size: int, seconds: float) -> None:
        self._batch_ms.append(seconds * 1e3)
        self._batch_size.append(size)

    def latency(self, event_ts: float, emitted_at: float) -> None:
        self._latency_ms.append((emitted_at - event_ts) * 1e3)

    @staticmethod
    def _pct(values: deque[float] | deque[int], qs: tuple[float, ...]) -> dict[str, float]:
        if not values:
            return {}
        arr = np.fromiter(values, dtype=np.float64)
        return {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}

    def snapshot(self) -> dict[str, object]:
        return {
            "uptime_s": time.time() - self.started,
            "counters": dict(self.counters),
            "rejected": dict(self.rejected),
            "event_to_list_ms": self._pct(self._latency_ms, (50, 99, 99.9)),
            "batch_ms": self._pct(self._batch_ms, (50, 99)),
            "batch_size": self._pct(self._batch_size, (50, 99)),
        }

    def prometheus(self, gauges: dict[str, float]) -> str:
        lines = []
        for name, value in sorted(self.counters.items()):
            lines.append(f"streamrec_{name}_total {value}")
        for code, value in sorted(self.rejected.items()):
            lines.append(f'streamrec_events_rejected_by_reason_total{{reason="{code}"}} {value}')
        for name, vals in (("event_to_list_ms", self._latency_ms), ("batch_ms", self._batch_ms)):
            for q, v in self._pct(vals, (50, 99, 99.9)).items():
                lines.append(f'streamrec_{name}{{quantile="{float(q[1:]) / 100:g}"}} {v:.3f}')
        for gauge, level in sorted(gauges.items()):
            lines.append(f"streamrec_{gauge} {level}")
        return "\n".join(lines) + "\n"
