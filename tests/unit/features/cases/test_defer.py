"""The pipeline's deferral (DeferMessage): rolled back alone, retried after a back-off,
quarantined after too many attempts; used by Email-to-Case for temporary DNS failures."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
from sqlalchemy import Connection, Engine

from mailcase.pipeline import worker
from mailcase.pipeline.worker import AddressInbox, DeferMessage, process_pending
from mailcase.storage import emaillog, messages
from mailcase.storage.spool import Spool
from tests.unit.storage.helpers import accepted_reply, make_message


class Flaky:
    """Defers messages to `bad` while `failing` is set."""

    name = "flaky"

    def __init__(self, bad: str) -> None:
        self.bad = bad
        self.failing = True
        self.prepared: list[int] = []

    def prepare(self, engine: Engine, batch: Sequence[messages.MessageSummary]) -> None:
        self.prepared.extend(m.id for m in batch)

    def deliver(self, conn: Connection, message: messages.MessageSummary, address: str) -> None:
        if self.failing and address == self.bad:
            raise DeferMessage("DNS timed out")

    def deliver_many(self, conn: Connection, batch: Sequence[messages.MessageSummary]) -> None:
        for m in batch:
            for a in m.rcpt_to:
                self.deliver(conn, m, a)


async def _spool(engine: Engine, *msgs: object) -> None:
    spool = Spool(engine)
    spool.start()
    try:
        for m in msgs:
            await spool.store(m, *accepted_reply(m))  # type: ignore[arg-type]
    finally:
        spool.close()


async def test_deferred_message_waits_then_is_retried(db_engine: Engine) -> None:
    good = make_message(rcpt_to=("ok@example.test",))
    slow = make_message(rcpt_to=("dns@example.test",))
    await _spool(db_engine, good, slow)
    dest = Flaky("dns@example.test")
    deferred: dict[int, float] = {}
    assert process_pending(db_engine, (AddressInbox(), dest), deferred=deferred) == 2
    states = {m.queue_id: (m.state, m.attempts) for m in messages.list_messages(db_engine)}
    assert states == {good.queue_id: ("processed", 1), slow.queue_id: ("received", 1)}
    assert dest.prepared  # prepare ran before the write transaction
    (entry,) = emaillog.query(db_engine, queue_id=slow.queue_id, outcome="deferred")
    assert "DNS timed out" in entry["reason"] and "retry in 30 s" in entry["reason"]
    # Skipped while its back-off runs: nothing to do, no busy loop.
    assert process_pending(db_engine, (AddressInbox(), dest), deferred=deferred) == 0
    # Its time comes (moved forward here instead of sleeping) and DNS works again.
    for pk in deferred:
        deferred[pk] = time.monotonic() - 1
    dest.failing = False
    assert process_pending(db_engine, (AddressInbox(), dest), deferred=deferred) == 1
    assert {m.state for m in messages.list_messages(db_engine)} == {"processed"}


async def test_deferred_too_often_is_quarantined(db_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "MAX_DEFERRALS", 2)
    slow = make_message(rcpt_to=("dns@example.test",))
    await _spool(db_engine, slow)
    dest = Flaky("dns@example.test")
    deferred: dict[int, float] = {}
    process_pending(db_engine, (dest,), deferred=deferred)
    assert messages.list_quarantined(db_engine) == []
    deferred.clear()
    process_pending(db_engine, (dest,), deferred=deferred)
    (q,) = messages.list_quarantined(db_engine)
    assert q.queue_id == slow.queue_id and "gave up after 2 attempts: DNS timed out" in (q.error or "")
