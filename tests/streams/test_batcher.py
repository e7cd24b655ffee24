import asyncio

from streams.batcher import MicroBatcher


def run(coro):
    return asyncio.run(coro)


def test_flushes_by_size_and_by_time_in_order():
    async def main():
        seen: list[list[int]] = []

        async def handle(batch):
            seen.append(list(batch))

        b = MicroBatcher(handle, max_size=4, max_wait_s=0.05)
        task = asyncio.create_task(b.run())
        for i in range(10):
            await b.submit(i)
        await asyncio.sleep(0.2)  # the tail of 2 goes out on the time budget
        await b.wait_idle()
        task.cancel()
        return seen

    seen = run(main())
    assert [x for batch in seen for x in batch] == list(range(10))
    assert all(len(batch) <= 4 for batch in seen)
    assert seen[0] == [0, 1, 2, 3]


def test_submit_blocks_when_pending_is_full():
    async def main():
        release = asyncio.Event()
        handled: list[int] = []

        async def handle(batch):
            await release.wait()
            handled.extend(batch)

        b = MicroBatcher(handle, max_size=2, max_wait_s=0.001, max_pending=3)
        task = asyncio.create_task(b.run())
        submitted = 0

        async def producer():
            nonlocal submitted
            for i in range(20):
                await b.submit(i)
                submitted += 1

        p = asyncio.create_task(producer())
        await asyncio.sleep(0.05)
        blocked_at = submitted
        release.set()
        await p
        await b.drain()
        await b.wait_idle()
        task.cancel()
        return blocked_at, handled

    blocked_at, handled = run(main())
    assert blocked_at <= 3 + 2  # pending bound plus the batch in flight
    assert sorted(handled) == list(range(20))


def test_a_failing_handler_does_not_stop_the_loop():
    async def main():
        handled: list[int] = []

        async def handle(batch):
            if 0 in batch:
                raise RuntimeError("boom")
            handled.extend(batch)

        b = MicroBatcher(handle, max_size=1, max_wait_s=0.001)
        task = asyncio.create_task(b.run())
        for i in range(3):
            await b.submit(i)
        await asyncio.sleep(0.05)
        await b.wait_idle()
        alive = not task.done()
        task.cancel()
        return handled, alive

    handled, alive = run(main())
    assert alive and handled == [1, 2]


def _recording(**kwargs) -> tuple[MicroBatcher[int], list[list[int]]]:
    """A batcher that records the batches it hands over (``behind`` always says yes)."""
    seen: list[list[int]] = []

    async def handle(batch):
        seen.append(list(batch))

    return MicroBatcher(handle, max_wait_s=0.001, behind=lambda: True, **kwargs), seen


def _batches_of(n_items: int, behind: bool) -> list[list[int]]:
    """Batches when ``n_items`` are queued before the flushing loop starts."""

    async def main():
        b, seen = _recording(max_size=4, behind_size=16, behind_wait_s=0.001, max_pending=64)
        b.behind = lambda: behind
        for i in range(n_items):
            await b.submit(i)
        task = asyncio.create_task(b.run())
        await asyncio.sleep(0.05)
        await b.wait_idle()
        task.cancel()
        return seen, b.behind_batches

    seen, behind_batches = run(main())
    assert [x for batch in seen for x in batch] == list(range(n_items))
    assert behind_batches == (len(seen) if behind else 0)
    return seen


def test_a_backlog_is_flushed_in_the_larger_batches():
    assert [len(b) for b in _batches_of(40, behind=True)] == [16, 16, 8]
    assert [len(b) for b in _batches_of(40, behind=False)] == [4] * 10


def test_behind_waits_longer_for_its_batch_to_fill():
    async def main():
        b, seen = _recording(max_size=2, behind_size=6, behind_wait_s=5.0)
        task = asyncio.create_task(b.run())
        for i in range(6):
            await b.submit(i)
            await asyncio.sleep(0.01)  # far past max_wait_s: only the behind wait holds them
        await b.wait_idle()
        task.cancel()
        return seen

    assert run(main()) == [[0, 1, 2, 3, 4, 5]]


def test_a_backlog_batch_goes_once_the_records_waiting_are_read():
    """Behind, a batch waits to fill only while records still wait on the broker: once the
    consumer has caught up it is flushed, long before its wait bound (an hour here)."""

    async def main():
        b, seen = _recording(max_size=2, behind_size=100, behind_wait_s=3600.0)
        asked: list[bool] = []
        # behind when the batch is started, caught up when it next asks
        b.behind = lambda: (asked.append(True), len(asked) == 1)[1]
        for i in range(4):
            await b.submit(i)
        task = asyncio.create_task(b.run())
        await asyncio.wait_for(b.wait_idle(), 60)  # a guard against a hang, not a timing
        task.cancel()
        return seen, b.behind_batches

    seen, behind_batches = run(main())
    assert seen == [[0, 1, 2, 3]] and behind_batches == 1
