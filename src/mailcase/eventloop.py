"""Which asyncio event loop the server processes run on.

uvloop (libuv) by default: on the accept path the event loop's own work (readiness polling,
callbacks, transport writes) was a fifth of the CPU an accepted message costs, and uvloop does
it in C (measured with bench/inbound.py: about 20% less CPU per message). It implements the
same public API we use (`create_server`, `start_tls`, transports and protocols). The standard
loop stays available (`server.event_loop = "asyncio"`) for debugging and for platforms without
uvloop wheels.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["name", "run", "wait_for"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], kind: Literal["uvloop", "asyncio"] = "uvloop") -> T:
    """`asyncio.run(main)` on the chosen loop (falls back to asyncio if uvloop is missing)."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; running on the standard asyncio loop")
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)


def name(loop: asyncio.AbstractEventLoop) -> str:
    """"uvloop" or "asyncio": what the ready line and the acceptors report."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


async def wait_for(aw: Awaitable[T], timeout: float) -> T:  # noqa: ASYNC109 - a drop-in for wait_for
    """`asyncio.wait_for` that never loses a cancellation.

    Python 3.11's `wait_for` returns the result, and drops the cancellation, when the awaited
    thing finishes at the moment the caller is cancelled (CPython gh-86296, fixed in 3.12 by
    building `wait_for` on `asyncio.timeout`). A loop that waits on a wake-up event then keeps
    running after it was cancelled: a delivery engine did not stop in a test, and went on to
    retry. `asyncio.timeout` keeps the cancellation; TimeoutError as with `wait_for`.
    """
    async with asyncio.timeout(timeout):
        return await aw
