"""A stand-in for kafka-python's producer: records what replay sends, fails on request."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson


class FakeFuture:
    def __init__(self, error: BaseException | None) -> None:
        self._error = error

    def add_errback(self, fn: Callable[[BaseException], Any]) -> FakeFuture:
        # A real future calls back from the I/O thread later; at once is the same to replay.
        if self._error is not None:
            fn(self._error)
        return self


class FakeProducer:
    """sent holds (topic, key, decoded value); flushes holds len(sent) at each flush.
    fail_at n makes the n-th send (1-based) fail delivery; interrupt_at n raises
    KeyboardInterrupt instead of sending the n-th record."""

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        fail_at: int | None = None,
        interrupt_at: int | None = None,
    ) -> None:
        self.config = dict(config or {})
        self.sent: list[tuple[str, bytes, dict[str, Any]]] = []
        self.flushes: list[int] = []
        self.closed = False
        self.metadata: list[tuple[str, int]] = []  # (topic, records sent before the request)
        self._fail_at = fail_at
        self._interrupt_at = interrupt_at

    def send(self, topic: str, value: Any = None, key: Any = None) -> FakeFuture:
        n = len(self.sent) + 1
        if n == self._interrupt_at:
            raise KeyboardInterrupt
        self.sent.append((topic, key, orjson.loads(value)))
        return FakeFuture(RuntimeError(f"record {n} lost") if n == self._fail_at else None)

    def partitions_for(self, topic: str) -> set[int]:
        self.metadata.append((topic, len(self.sent)))
        return {0}

    def flush(self, timeout: float | None = None) -> None:
        self.flushes.append(len(self.sent))

    def close(self, timeout: float | None = None) -> None:
        self.closed = True

    def factory(self, config: Mapping[str, Any]) -> FakeProducer:
        """For replay's producer_factory: this producer, with the config it was given."""
        self.config = dict(config)
        return self

    @property
    def event_ids(self) -> list[Any]:
        return [value.get("event_id") for _, _, value in self.sent]
