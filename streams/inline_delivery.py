"""Hand each fetched record to the streams without four tasks and two turns of the event loop.

faust-streaming 0.15.3's consumer drains a fetched batch one record at a time through
``wait_first(deliver(record), suspend_flow.wait())``: the delivery may block (a full stream
buffer, the producer buffer, flow control during a rebalance) and a rebalance must be able to
interrupt it. ``mode``'s ``wait_first`` runs every awaitable as a task (the delivery, the suspend
wait, and the service's stopped and crashed waits), waits for the first, then cancels the rest:
per record four tasks and at least two turns of the event loop. Every turn also runs whatever
else is ready, so on a worker whose loop ranks a micro-batch every ~20 ms, each turn may wait
out a ranking batch, and a fetched batch of ten records took tens to hundreds of milliseconds to
reach the agent. aiokafka sends the next fetch to a broker only once every record fetched from it
has been taken, so that time also delayed the next fetch (docs/benchmarks.md, *End to end*).

Almost every delivery never blocks. Here the delivery coroutine is first run inline, up to its
first suspension: if it finishes there, that is the whole delivery, and no task is made. If it
suspends, it goes on under ``mode``'s ``wait_first`` exactly as before (``_Continued`` resumes
it where it stopped), so a rebalance still interrupts a blocked delivery. The delivery's first
steps thus run in the draining task, not a task of their own: fine for Faust's delivery (flow
control, the producer buffer, a stream queue's put), which binds nothing to the current task.
"""

from __future__ import annotations

import inspect
from collections.abc import Coroutine, Generator
from typing import Any

from mode.services import WaitResults


class _Continued:
    """An awaitable that resumes ``coro``, which has already run up to yielding ``pending``
    (what an ``await`` inside it is waiting for): a task driving this drives ``coro`` on,
    cancellation included, as ``await coro`` would have."""

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation, or an error thrown into the await
                try:
                    pending = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as done:
                    return done.value


class InlineDelivery:
    """Consumer mix-in: ``wait_first(delivery, other)`` runs ``delivery`` inline first, and falls
    back to the task-per-awaitable wait only when it suspends."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        wait_first = super().wait_first  # type: ignore[misc]
        if len(coros) != 2 or timeout is not None or not inspect.iscoroutine(coros[0]):
            return await wait_first(*coros, timeout=timeout)
        first, other = coros
        try:
            pending = first.send(None)
        except StopIteration as done:
            _close(other)
            return WaitResults([first], [done.value], False)
        except BaseException:
            _close(other)
            raise
        return await wait_first(_Continued(first, pending), other)


def _close(awaitable: Any) -> None:
    """A coroutine that will not be awaited now is closed, so it is not reported as never
    awaited (an Event's ``wait()`` holds nothing until it runs)."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()
