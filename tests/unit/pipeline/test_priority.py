"""Processing threads run below normal CPU priority; the thread that made them does not."""

from __future__ import annotations

import os
import threading

from mailcase.pipeline.priority import background_executor


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_background_threads_are_lowered_and_their_children_inherit_it() -> None:
    mine = _nice()
    pool = background_executor("test-bg", 5, workers=2)
    try:
        assert pool.submit(_nice).result(10) == min(19, mine + 5)

        def child_of_background() -> int:
            got: list[int] = []
            t = threading.Thread(target=lambda: got.append(_nice()))
            t.start()
            t.join(10)
            return got[0]

        assert pool.submit(child_of_background).result(10) == min(19, mine + 5)
    finally:
        pool.shutdown()
    assert _nice() == mine  # the caller's own thread is untouched


def test_zero_changes_nothing() -> None:
    mine = _nice()
    pool = background_executor("test-bg0", 0)
    try:
        assert pool.submit(_nice).result(10) == mine
    finally:
        pool.shutdown()
