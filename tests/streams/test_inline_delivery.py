"""streams.inline_delivery: a delivery that does not block runs inline (no task, no turn of the
event loop); one that blocks goes on under mode's wait_first, where the other awaitable (Faust's
suspend-flow wait) still interrupts it."""

import asyncio
import warnings

import mode
import pytest

from streams.inline_delivery import InlineDelivery


class Plain(mode.Service):
    """What Faust's consumer inherits: mode's task-per-awaitable wait_first."""


class Inline(InlineDelivery, mode.Service):
    pass


def run(coro):
    return asyncio.run(coro)


def _tasks_made_during(coro_fn):
    """(result, tasks created) of awaiting coro_fn() with asyncio.ensure_future counted."""

    async def main():
        made = 0
        real = asyncio.ensure_future

        def counting(*args, **kwargs):
            nonlocal made
            made += 1
            return real(*args, **kwargs)

        asyncio.ensure_future = counting
        try:
            result = await coro_fn()
        finally:
            asyncio.ensure_future = real
        return result, made

    return run(main())


@pytest.mark.parametrize("cls, inline", [(Plain, False), (Inline, True)])
def test_a_delivery_that_does_not_block_runs_without_tasks(cls, inline):
    delivered = []

    async def deliver(message):
        delivered.append(message)
        return message * 2

    async def go():
        svc = cls()
        suspended = asyncio.Event()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "coroutine ... was never awaited" fails the test
            res = await svc.wait_first(deliver(21), suspended.wait())
        return res

    res, made = _tasks_made_during(go)
    assert delivered == [21]
    assert len(res.done) == 1 and res.results == [42] and not res.stopped
    # mode runs the delivery, the suspend wait, stopped and crashed as four tasks
    assert (made == 0) if inline else (made == 4)


def test_a_delivery_that_blocks_finishes_under_the_general_wait():
    async def main():
        svc = Inline()
        gate = asyncio.Event()
        steps = []

        async def deliver():
            steps.append("before")
            await gate.wait()  # a full buffer, say
            steps.append("after")
            return "done"

        async def open_gate():
            await asyncio.sleep(0.01)
            gate.set()

        opener = asyncio.ensure_future(open_gate())
        res = await svc.wait_first(deliver(), asyncio.Event().wait())
        await opener
        return res, steps

    res, steps = run(main())
    assert steps == ["before", "after"]
    assert res.results == ["done"] and not res.stopped


def test_a_blocked_delivery_is_cancelled_when_the_flow_is_suspended():
    async def main():
        svc = Inline()
        seen = []
        suspend = asyncio.Event()

        async def deliver():
            try:
                await asyncio.Event().wait()  # never set: blocked for good
            except asyncio.CancelledError:
                seen.append("cancelled")  # its cleanup runs, as under mode's own wait_first
                raise

        async def suspend_soon():
            await asyncio.sleep(0.01)
            suspend.set()

        trigger = asyncio.ensure_future(suspend_soon())
        res = await svc.wait_first(deliver(), suspend.wait())
        await trigger
        await asyncio.sleep(0)  # let the cancellation reach the delivery
        return res, seen

    res, seen = run(main())
    assert seen == ["cancelled"]
    assert len(res.done) == 1 and res.results == [True]  # the suspend wait won


def test_errors_reach_the_caller_whether_raised_before_or_after_blocking():
    async def early():
        raise ValueError("bad record")

    async def late():
        await asyncio.sleep(0.001)
        raise KeyError("late")

    async def main():
        svc = Inline()
        with pytest.raises(ValueError, match="bad record"):
            await svc.wait_first(early(), asyncio.Event().wait())
        with pytest.raises(KeyError, match="late"):
            await svc.wait_first(late(), asyncio.Event().wait())

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        run(main())


def test_other_calls_take_modes_path_unchanged():
    async def main():
        svc = Inline()
        ev = asyncio.Event()
        ev.set()
        one = await svc.wait_first(ev.wait())  # one awaitable
        timed = await svc.wait_first(asyncio.sleep(1), asyncio.Event().wait(), timeout=0.01)
        return one, timed

    one, timed = run(main())
    assert one.results == [True]
    assert timed.done == [] and timed.results == []  # the timeout ran out on both
