"""How many of the worker's own errors it tolerates before it stops.

An error while applying a valid event comes from the worker (its stored state, its storage, a
bug), not from the event. One such event is set aside in the dead-letter topic, so a single
poison event cannot stall its partition; but when errors keep coming, every later event would
be dead-lettered while the worker looked healthy. Past ``budget`` errors within the last
``window`` events the worker stops instead (unhealthy, exit code 1) and is restarted on its
committed offsets.
"""

from __future__ import annotations

from collections import deque


class ErrorBudget:
    def __init__(self, budget: int, window: int) -> None:
        if budget < 0 or window < 1:
            raise ValueError("budget >= 0 and window >= 1")
        self.budget = budget
        self.window = window
        self.events = 0
        self.errors = 0
        self._recent: deque[int] = deque()  # event numbers of the errors still in the window

    def event(self) -> None:
        """Count one event taken in."""
        self.events += 1

    def error(self) -> bool:
        """Count one error (of the event counted last); False once the budget is spent."""
        self.errors += 1
        self._recent.append(self.events)
        while self._recent and self._recent[0] <= self.events - self.window:
            self._recent.popleft()
        return len(self._recent) <= self.budget

    def in_window(self) -> int:
        return sum(1 for n in self._recent if n > self.events - self.window)
