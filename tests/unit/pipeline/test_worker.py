"""The pipeline against real databases (SQLite and PostgreSQL): exactly once, quarantine, retry."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from mailcase.pipeline.worker import AddressInbox, process_pending
from mailcase.storage import emaillog, messages
from mailcase.storage.models import inbound_deliveries
from mailcase.storage.spool import Spool
from tests.unit.storage.helpers import accepted_reply, make_message


async def _spool(engine: Engine, *msgs: object) -> None:
    spool = Spool(engine)
    spool.start()
    try:
        for m in msgs:
            await spool.store(m, *accepted_reply(m))  # type: ignore[arg-type]
    finally:
        spool.close()


def _deliveries(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(select(inbound_deliveries.c.message_pk, inbound_deliveries.c.address))]


class Exploding:
    """A destination that fails for one address: stands in for a feature that raises."""

    name = "exploding"

    def __init__(self, bad: str) -> None:
        self.bad = bad

    def deliver(self, conn: Connection, message: messages.MessageSummary, address: str) -> None:
        if address == self.bad:
            raise ValueError(f"cannot handle {address}")


class Interrupt(BaseException):
    """Simulates the process dying mid-batch (not an Exception: nothing may catch it)."""


class DiesAfter:
    name = "dies"

    def __init__(self, n: int) -> None:
        self.left = n

    def deliver(self, conn: Connection, message: messages.MessageSummary, address: str) -> None:
        self.left -= 1
        if self.left < 0:
            raise Interrupt


async def test_each_message_lands_once_per_address_and_is_logged(db_engine: Engine) -> None:
    a = make_message(rcpt_to=("one@example.test", "two@example.test"))
    b = make_message()
    await _spool(db_engine, a, b)
    assert process_pending(db_engine) == 2
    assert process_pending(db_engine) == 0
    assert len(_deliveries(db_engine)) == 3
    states = {m.queue_id: m.state for m in messages.list_messages(db_engine)}
    assert states == {a.queue_id: "processed", b.queue_id: "processed"}
    log = emaillog.query(db_engine, queue_id=a.queue_id)
    assert sorted(r["outcome"] for r in log) == ["accepted", "processed"]


async def test_failing_message_is_quarantined_others_still_commit_and_retry_works(db_engine: Engine) -> None:
    good = make_message(rcpt_to=("ok@example.test",))
    bad = make_message(rcpt_to=("broken@example.test",))
    await _spool(db_engine, good, bad)
    dests = (AddressInbox(), Exploding("broken@example.test"))
    assert process_pending(db_engine, dests) == 2
    q = messages.list_quarantined(db_engine)
    assert [m.queue_id for m in q] == [bad.queue_id]
    assert "cannot handle broken@example.test" in (q[0].error or "")
    # The failed message's partial delivery was rolled back with its savepoint.
    assert [addr for _, addr in _deliveries(db_engine)] == ["ok@example.test"]
    entry = emaillog.query(db_engine, queue_id=bad.queue_id, outcome="quarantined")
    assert entry and "cannot handle" in entry[0]["reason"]
    # Still quarantined on the next pass; retried only when asked.
    assert process_pending(db_engine, dests) == 0
    assert messages.retry_quarantined(db_engine, bad.queue_id) == 1
    assert process_pending(db_engine, (AddressInbox(),)) == 1
    assert messages.list_quarantined(db_engine) == []
    assert sorted(addr for _, addr in _deliveries(db_engine)) == ["broken@example.test", "ok@example.test"]


async def test_crash_mid_batch_rolls_back_and_reprocesses_exactly_once(db_engine: Engine) -> None:
    msgs = [make_message() for _ in range(5)]
    await _spool(db_engine, *msgs)
    with pytest.raises(Interrupt):
        process_pending(db_engine, (AddressInbox(), DiesAfter(3)))
    assert _deliveries(db_engine) == []
    assert {m.state for m in messages.list_messages(db_engine)} == {"received"}
    assert process_pending(db_engine) == 5
    with db_engine.connect() as c:
        per_message = c.execute(
            select(func.count()).select_from(inbound_deliveries).group_by(inbound_deliveries.c.message_pk)
        ).scalars().all()
    assert per_message == [1] * 5


class Recording:
    """Remembers each batch it was given, and whether it was released after each."""

    name = "recording"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.held = False
        self.released = 0

    def prepare(self, engine: Engine, batch: Sequence[messages.MessageSummary]) -> None:
        assert not self.held, "the previous batch was not released"
        self.batches.append([m.queue_id for m in batch])
        self.held = True

    def release(self) -> None:
        self.held = False
        self.released += 1

    def deliver(self, conn: Connection, message: messages.MessageSummary, address: str) -> None:
        pass

    def deliver_many(self, conn: Connection, batch: Sequence[messages.MessageSummary]) -> None:
        pass


async def test_batches_are_cut_by_bytes_and_released_after_each(db_engine: Engine) -> None:
    """Issue 11 item 3: a batch's memory is bounded by its bytes, not by how many arrived."""
    big = [make_message(content=bytearray(b"Subject: big\r\n\r\n" + b"x" * 40_000 + b"\r\n"))
           for _ in range(5)]
    await _spool(db_engine, *big)
    dest = Recording()
    assert process_pending(db_engine, (AddressInbox(), dest), batch_bytes=100_000) == 5
    # Two of ~40 kB fit in 100 kB, a third does not; one message always goes, however big.
    assert [len(b) for b in dest.batches] == [2, 2, 1]
    assert [q for b in dest.batches for q in b] == [m.queue_id for m in big]
    assert not dest.held and dest.released == len(dest.batches) + 1  # + the empty last look
    dest = Recording()
    await _spool(db_engine, *(make_message() for _ in range(2)))
    assert process_pending(db_engine, (AddressInbox(), dest), batch_bytes=10) == 2
    assert [len(b) for b in dest.batches] == [1, 1]
