"""Claiming and marking spooled messages: exactly-once processing on both engines."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from mailcase.errors import StorageError
from mailcase.storage import db, messages
from mailcase.storage.models import email_log, inbound_deliveries
from mailcase.storage.spool import LogEntry, Spool, SpooledMessage

from .helpers import accepted_reply, make_message


def _spool_all(engine: Engine, msgs: Sequence[SpooledMessage]) -> None:
    spool = Spool(engine)
    spool.start()

    async def run() -> None:
        await asyncio.gather(*(spool.store(m, *accepted_reply(m)) for m in msgs))

    try:
        asyncio.run(run())
    finally:
        spool.close()


def test_list_get_and_counts(db_engine: Engine) -> None:
    msgs = [make_message() for _ in range(5)]
    _spool_all(db_engine, msgs)
    listed = messages.list_messages(db_engine)
    assert [m.queue_id for m in listed] == [m.queue_id for m in reversed(msgs)]  # newest first
    assert not hasattr(listed[0], "content")
    page2 = messages.list_messages(db_engine, limit=2, before_id=listed[1].id)
    assert [m.queue_id for m in page2] == [listed[2].queue_id, listed[3].queue_id]
    assert messages.get_message(db_engine, "nope") is None
    got = messages.get_message(db_engine, msgs[0].queue_id)
    assert got is not None and got.content == bytes(msgs[0].content)
    assert messages.count_by_state(db_engine) == {"received": 5, "processed": 0, "quarantined": 0}
    with pytest.raises(ValueError):
        messages.list_messages(db_engine, state="bogus")


def test_claim_mark_processed_quarantine_and_retry(db_engine: Engine) -> None:
    msgs = [make_message(rcpt_to=("a@example.test", "b@example.test")) for _ in range(3)]
    _spool_all(db_engine, msgs)
    with db.begin_write(db_engine) as conn:
        claimed = messages.claim_received(conn, 2)
        assert [m.queue_id for m in claimed] == [msgs[0].queue_id, msgs[1].queue_id]  # oldest
        first, second = claimed
        assert messages.record_delivery(conn, first.id, "a@example.test") is True
        assert messages.record_delivery(conn, first.id, "a@example.test") is False  # once
        messages.mark_processed(conn, first.id, ["a@example.test", "b@example.test"])
        messages.insert_log(conn, LogEntry(time=datetime.now(UTC), queue_id=first.queue_id,
                                           outcome="processed"))
        assert messages.mark_quarantined(conn, second.id, "parse error") is True
    # processed twice: refused, so its effects cannot be written twice
    with pytest.raises(StorageError), db.begin_write(db_engine) as conn:
        messages.mark_processed(conn, first.id)
    assert messages.mark_quarantined(db_engine, first.queue_id, "x") is False
    assert messages.count_by_state(db_engine) == {"received": 1, "processed": 1, "quarantined": 1}
    done = messages.get_message(db_engine, first.queue_id)
    assert done is not None and done.state == "processed" and done.processed_at is not None
    assert done.attempts == 1
    q = messages.list_quarantined(db_engine)
    assert [(m.queue_id, m.error, m.attempts) for m in q] == [(second.queue_id, "parse error", 1)]

    assert messages.record_failure(db_engine, msgs[2].queue_id, "timeout") == 1
    assert messages.record_failure(db_engine, msgs[2].queue_id, "timeout") == 2
    assert messages.record_failure(db_engine, first.queue_id, "x") == 0

    assert messages.retry_quarantined(db_engine, "unknown") == 0
    assert messages.retry_quarantined(db_engine, second.queue_id) == 1
    again = messages.get_message(db_engine, second.queue_id)
    assert again is not None and (again.state, again.error, again.attempts) == ("received", None, 1)
    with db.begin_write(db_engine) as conn:
        for m in messages.claim_received(conn, 10):
            messages.mark_quarantined(conn, m.queue_id, "still broken")
    assert messages.retry_quarantined(db_engine) == 2  # all
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(inbound_deliveries)).scalar() == 2
        assert conn.execute(
            select(func.count()).select_from(email_log).where(email_log.c.outcome == "processed")
        ).scalar() == 1


def test_claim_needs_a_write_transaction_on_sqlite(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        db.upgrade(engine)
        with engine.connect() as conn, pytest.raises(StorageError, match="write transaction"):
            messages.claim_received(conn, 1)
        with db.write_session(engine) as session:
            assert messages.claim_received(session, 1) == []
    finally:
        engine.dispose()


def test_rollback_leaves_the_message_to_be_claimed_again(db_engine: Engine) -> None:
    msg = make_message()
    _spool_all(db_engine, [msg])
    with pytest.raises(RuntimeError), db.begin_write(db_engine) as conn:
        (m,) = messages.claim_received(conn, 10)
        messages.record_delivery(conn, m.id, "support@example.test")
        messages.mark_processed(conn, m.id)
        raise RuntimeError("crash before commit")
    with db.begin_write(db_engine) as conn:
        (m,) = messages.claim_received(conn, 10)
        assert messages.record_delivery(conn, m.id, "support@example.test") is True
        messages.mark_processed(conn, m.id)


def _worker(engine: Engine, seen: list[str], errors: list[BaseException],
            start: threading.Barrier) -> None:
    try:
        start.wait()
        while True:
            with db.begin_write(engine) as conn:
                claimed = messages.claim_received(conn, 5)
                if not claimed:
                    return
                for m in claimed:
                    for address in m.rcpt_to:
                        if not messages.record_delivery(conn, m.id, address):
                            raise AssertionError(f"{m.queue_id} delivered twice")
                    messages.mark_processed(conn, m.id)
                    seen.append(m.queue_id)
                time.sleep(0.01)  # keep the rows locked for a while: the other must skip them
    except BaseException as exc:
        errors.append(exc)


def _run_claimers(engine: Engine, n_msgs: int) -> tuple[list[str], list[str], set[str]]:
    msgs = [make_message(rcpt_to=("a@example.test", "b@example.test")) for _ in range(n_msgs)]
    _spool_all(engine, msgs)
    a: list[str] = []
    b: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)
    threads = [threading.Thread(target=_worker, args=(engine, seen, errors, start))
               for seen in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    return a, b, {m.queue_id for m in msgs}


def test_two_claimers_process_each_message_once(db_engine: Engine) -> None:
    a, b, everything = _run_claimers(db_engine, 60)
    assert len(a) + len(b) == 60
    assert set(a) | set(b) == everything
    assert not set(a) & set(b)
    assert messages.count_by_state(db_engine)["processed"] == 60
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(inbound_deliveries)).scalar() == 120


@pytest.mark.postgres
def test_skip_locked_lets_claimers_work_side_by_side(pg_engine: Engine) -> None:
    db.upgrade(pg_engine)
    a, b, everything = _run_claimers(pg_engine, 100)
    assert not set(a) & set(b)
    assert set(a) | set(b) == everything
    # With SKIP LOCKED neither waits for the other's batch, so both get a real share.
    assert len(a) >= 20 and len(b) >= 20, (len(a), len(b))


def test_backlog_age_is_the_oldest_waiting_message(db_engine: Engine) -> None:
    """Issue 13: /metrics says how long the oldest accepted message has waited for processing."""
    from datetime import timedelta

    from mailcase.metrics import Metrics
    from mailcase.pipeline.worker import process_pending

    assert messages.backlog_age(db_engine) is None
    old = make_message(received_at=datetime.now(UTC) - timedelta(seconds=90))
    _spool_all(db_engine, [old, make_message()])
    age = messages.backlog_age(db_engine)
    assert age is not None and 89 <= age < 3600
    metrics = Metrics()
    metrics.watch_backlog_age(lambda: messages.backlog_age(db_engine))
    assert b"mailcase_pipeline_backlog_age_seconds 9" in metrics.exposition()
    process_pending(db_engine)
    assert messages.backlog_age(db_engine) is None
    assert b"mailcase_pipeline_backlog_age_seconds 0.0" in metrics.exposition()
