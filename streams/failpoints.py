"""Named fail points, for fault-injection tests on the real broker (the FreeBSD fail(9) and TiKV
fail-rs idea). The worker calls ``hit(name)`` at the few places where its own faults matter to
the delivery promise; a point raises :class:`FailPointError` only when ``errors.failpoints``
names it, so in production a hit is one dict lookup.

Spec: comma-separated ``point=N`` (the first N hits fail) or ``point=always``, for example
``rank=always,publish.send=3``. Points: ``rank`` (the model ranking a batch), ``rank.fallback``
(the heuristic lists after it failed), ``publish.send`` (handing a list to the producer),
``state.read`` (reading a user's stored record), ``dlq.send`` (handing a dead letter to the
producer).
"""

from __future__ import annotations

POINTS = ("rank", "rank.fallback", "publish.send", "state.read", "dlq.send")


class FailPointError(RuntimeError):
    """Raised at an armed fail point."""


class FailPoints:
    def __init__(self, spec: str = "") -> None:
        self._left: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, count = part.partition("=")
            name = name.strip()
            if name not in POINTS:
                raise ValueError(f"unknown fail point {name!r} (known: {', '.join(POINTS)})")
            count = count.strip()
            if count == "always":
                self._left[name] = float("inf")
            elif count.isdigit() and int(count) > 0:
                self._left[name] = int(count)
            else:
                raise ValueError(f"fail point {name!r}: expected =N or =always, got {part!r}")
        self.hits: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._left)

    def hit(self, name: str) -> None:
        left = self._left.get(name)
        if not left:
            return
        self._left[name] = left - 1
        self.hits[name] = self.hits.get(name, 0) + 1
        raise FailPointError(f"fail point {name!r} (injected fault #{self.hits[name]})")
