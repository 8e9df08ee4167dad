"""A time limit per message for the pipeline's slow steps (parsing, HTML sanitising).

A Python thread cannot be killed, so the limit is enforced by not waiting: the work runs in a
thread of its own, and past the limit the caller stops waiting and takes a slow but bounded
path for that message (see `mime.parse_message(safe=True)`); the late thread finishes on its
own and its result is dropped. The work itself is bounded (size and depth limits), so a late
thread ends; the sanitiser (nh3) releases the GIL, so it does not slow the others while it
runs. At most `max_late` late threads at a time: beyond that every message takes the bounded
path at once, so a flood of slow messages cannot pile up threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Watchdog"]

T = TypeVar("T")


class _Call(Generic[T]):
    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self, on_late_end: Callable[[_Call[T]], None]) -> None:
        try:
            self.result = self.fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.error = e
        finally:
            self.done.set()
            on_late_end(self)


class Watchdog:
    """Runs `fn` with a time limit; `None` when it did not finish in time (see module doc).

    The threads are kept (daemon threads, so a late one never delays the process's exit) and
    each call gets one that is idle, or a new one: a call never waits behind a late one.
    """

    def __init__(self, limit: float, *, max_late: int = 2) -> None:
        self.limit = limit
        self.max_late = max_late
        self._lock = threading.Lock()
        self._late: set[_Call[object]] = set()
        self._jobs: queue.SimpleQueue[_Call[object]] = queue.SimpleQueue()
        self._idle = 0
        self._threads = 0

    @property
    def late(self) -> int:
        """Threads still running after their limit."""
        with self._lock:
            return len(self._late)

    def _ended(self, call: _Call[object]) -> None:
        with self._lock:
            self._late.discard(call)
            self._idle += 1

    def _work(self) -> None:
        while True:
            self._jobs.get().run(self._ended)

    def run(self, fn: Callable[[], T], *, name: str = "mailcase-watched") -> T | None:
        """`fn()`, or None if it took longer than the limit (or too many are late already)."""
        call = _Call(fn)
        with self._lock:
            if len(self._late) >= self.max_late:
                return None
            if self._idle:
                self._idle -= 1  # that thread takes this call
            else:
                self._threads += 1
                threading.Thread(
                    target=self._work, name=f"{name}-{self._threads}", daemon=True
                ).start()
        self._jobs.put(call)  # type: ignore[arg-type]
        if not call.done.wait(self.limit):
            with self._lock:
                if not call.done.is_set():
                    self._late.add(call)  # type: ignore[arg-type]
                    return None
        if call.error is not None:
            raise call.error
        return call.result
