"""Processing threads run below normal CPU priority; the thread that made them does not."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

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


async def test_a_pipeline_long_behind_catches_up_at_normal_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full batches only, for longer than `catch_up_after`: the next batches run on the
    normal-priority pool; once a batch is not full, back to the background pool."""
    import asyncio

    from mailcase.pipeline.worker import Pipeline
    from mailcase.storage import messages
    from mailcase.storage.db import make_engine, upgrade
    from mailcase.storage.spool import Spool
    from tests.unit.storage.helpers import accepted_reply, make_message

    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    upgrade(engine)
    spool = Spool(engine)
    spool.start()
    for _ in range(7):
        m = make_message()
        await spool.store(m, *accepted_reply(m))
    spool.close()
    background = background_executor("test-low", 5)
    catch_up = background_executor("test-normal", 0)
    used: list[int] = []  # the nice value of the thread each batch ran on
    import mailcase.pipeline.worker as worker

    real = worker.process_batch

    def spy(*args: object, **kw: object) -> int:
        used.append(_nice())
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(worker, "process_batch", spy)
    pipeline = Pipeline(engine, batch_size=2, gather=0.0, poll_interval=0.05,
                        executor=background, catch_up=catch_up, catch_up_after=0.0)
    task = asyncio.create_task(pipeline.run())
    try:
        for _ in range(200):  # bounded: 10 s
            if not messages.count_by_state(engine).get("received"):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # a few idle passes
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        background.shutdown()
        catch_up.shutdown()
        engine.dispose()
    low, normal = min(19, _nice() + 5), _nice()
    # 7 messages in batches of 2: full, full, full (behind: catch up), then 1, then idle passes.
    assert used[0] == low
    assert normal in used[1:4]
    assert used[-1] == low  # caught up: back in the background
