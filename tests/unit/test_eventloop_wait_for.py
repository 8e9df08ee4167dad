"""eventloop.wait_for keeps a cancellation that 3.11's asyncio.wait_for drops."""

from __future__ import annotations

import asyncio
import sys

import pytest

from mailcase import eventloop


async def _cancel_as_the_event_fires(waiter: object) -> bool:
    """Cancel a task whose awaited event is set in the same loop iteration; True if the task
    then ended cancelled (as a stopping delivery engine or pipeline must)."""
    wake = asyncio.Event()
    rounds = 0

    async def loop_forever() -> None:
        nonlocal rounds
        while rounds < 1000:  # bounded: a lost cancellation must not hang the test
            rounds += 1
            try:
                await waiter(wake.wait(), 10)  # type: ignore[operator]
            except TimeoutError:
                pass
            wake.clear()

    task = asyncio.create_task(loop_forever())
    await asyncio.sleep(0)
    wake.set()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    if not done:  # still looping: the cancellation was lost
        task.cancel()
        await asyncio.wait([task], timeout=2)
        return False
    return task.cancelled()


async def test_a_cancel_at_the_moment_of_the_wake_up_is_kept() -> None:
    assert await _cancel_as_the_event_fires(eventloop.wait_for)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="fixed in Python 3.12")
async def test_asyncio_wait_for_of_3_11_loses_it() -> None:
    """Why eventloop.wait_for exists (and that the check above can fail)."""
    assert not await _cancel_as_the_event_fires(asyncio.wait_for)


async def test_timeout_is_a_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        await eventloop.wait_for(asyncio.Event().wait(), 0.01)
    assert await eventloop.wait_for(asyncio.sleep(0, "done"), 1) == "done"
