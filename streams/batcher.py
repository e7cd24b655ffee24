"""Micro-batching of model work across users.

Events are accepted one by one (table writes must run in their own event's context); the model
runs once per batch. A batch is flushed when it reaches ``max_size`` or ``max_wait_s`` after the
flushing loop found it non-empty, whichever comes first. ``submit`` waits while ``max_pending``
items are queued, so a slow model pushes back on the consumer instead of growing memory.

When the consumer is behind (``behind()``: records known to be waiting on the broker), a batch may
grow to ``behind_size`` and wait up to ``behind_wait_s`` to fill, as long as records still wait.
Each user gets one list per batch, after their last event in it, so in a backlog one large batch
answers several events of a user with one ranked list (and one encoder pass) where small batches
would rank the user again for each. Caught up, batches are small again and latency is the small
batch's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
BEHIND_POLL_S = 0.01  # how often a backlog batch that is filling asks whether it still is one


class MicroBatcher(Generic[T]):
    def __init__(
        self,
        handle: Callable[[list[T]], Awaitable[None]],
        max_size: int,
        max_wait_s: float,
        max_pending: int | None = None,
        behind: Callable[[], bool] | None = None,
        behind_size: int | None = None,
        behind_wait_s: float | None = None,
    ) -> None:
        self.handle = handle
        self.max_size = max(1, max_size)
        self.max_wait_s = max_wait_s
        self.behind = behind
        self.behind_size = max(self.max_size, behind_size or self.max_size)
        self.behind_wait_s = max(max_wait_s, behind_wait_s or max_wait_s)
        self.max_pending = max(max_pending or 4 * self.max_size, self.behind_size)
        self._target = self.max_size  # the size that flushes the batch being filled
        self._items: list[T] = []
        self._nonempty = asyncio.Event()
        self._full = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.batches = 0
        self.items = 0
        self.behind_batches = 0  # batches sized for a backlog

    def __len__(self) -> int:
        return len(self._items)

    async def submit(self, item: T) -> None:
        while len(self._items) >= self.max_pending:
            self._space.clear()
            await self._space.wait()
        self._items.append(item)
        self._idle.clear()
        self._nonempty.set()
        if len(self._items) >= self._target:
            self._full.set()

    async def run(self) -> None:
        """Flush batches forever (run it as a task; cancel it to stop)."""
        while True:
            await self._nonempty.wait()
            behind = self.behind is not None and self.behind_size > self.max_size and self.behind()
            self._target, wait_s = (
                (self.behind_size, self.behind_wait_s)
                if behind
                else (self.max_size, self.max_wait_s)
            )
            if len(self._items) < self._target:
                self._full.clear()
                if behind:
                    await self._fill_while_behind(wait_s)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), wait_s)
            if behind:
                self.behind_batches += 1
            await self._flush_one()

    async def _fill_while_behind(self, wait_s: float) -> None:
        """A backlog batch grows while records wait on the broker, up to ``behind_size`` or
        ``wait_s``; once they are read (``behind()`` turns false) it goes at once. Waiting on
        would only delay the lists: after a long batch the records that came in meanwhile are
        read in a fraction of the wait, and nothing more is waiting to fill the batch."""
        assert self.behind is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not self._full.is_set():
            left = deadline - loop.time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), min(left, BEHIND_POLL_S))
            if not self.behind():
                return

    async def _flush_one(self) -> None:
        n = self._target
        batch, self._items = self._items[:n], self._items[n:]
        if len(self._items) < n:
            self._full.clear()
        if not self._items:
            self._nonempty.clear()
        self._space.set()
        if batch:
            self.batches += 1
            self.items += len(batch)
            try:
                await self.handle(batch)
            except Exception:
                # The handler owns its errors; this only keeps the flushing loop alive.
                log.exception("batch handler failed on %d items", len(batch))
        if not self._items:
            self._idle.set()

    async def drain(self) -> None:
        """Process everything queued now (shutdown, tests)."""
        while self._items:
            await self._flush_one()

    async def wait_idle(self) -> None:
        await self._idle.wait()
