"""RawInsert (SQLite): rows read back exactly as SQLAlchemy's own insert would store them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select

from mailcase.storage import db, messages
from mailcase.storage._records import LogEntry, log_row, message_row
from mailcase.storage.models import email_log, inbound_deliveries, inbound_messages
from mailcase.storage.rawinsert import RawInsert, raw_insert

from .helpers import make_message


@pytest.fixture
def sqlite(tmp_path: Path, sqlite_template: Path) -> Iterator[Engine]:
    path = tmp_path / "raw.sqlite3"
    path.write_bytes(sqlite_template.read_bytes())
    engine = db.make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def _entry(**changes: object) -> LogEntry:
    fields: dict[str, object] = {
        "time": dt.datetime(2026, 11, 27, 1, 2, 3, 456789, tzinfo=dt.UTC),
        "queue_id": "Q1",
        "client_ip": "192.0.2.7",
        "helo": "client.example",
        "mail_from": "a@example.org",
        "rcpt_to": ("x@example.test", "ü@example.test"),
        "tls_version": "TLSv1.3",
        "requiretls": True,
        "size": 2048,
        "message_id": "<id@example.org>",
        "outcome": "accepted",
        "reply_code": 250,
        "reply_text": "2.0.0 Ok",
    }
    fields.update(changes)
    return LogEntry(**fields)  # type: ignore[arg-type]


def _log_rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(select(email_log).order_by(email_log.c.id)).mappings().all()
    return [{k: v for k, v in r.items() if k != "id"} for r in rows]


def test_rows_read_back_like_sqlalchemy_inserted_ones(sqlite: Engine) -> None:
    entries = [_entry(), _entry(queue_id=None, requiretls=False, size=None, reason="x\ny")]
    cols = [c.name for c in email_log.columns if c.name != "id"]
    with db.begin_write(sqlite) as conn:
        conn.execute(insert(email_log), [log_row(e) for e in entries])
    by_sqlalchemy = _log_rows(sqlite)
    with db.begin_write(sqlite) as conn:
        conn.execute(email_log.delete())
        raw_insert(email_log, cols, conn.dialect).executemany(conn, [log_row(e) for e in entries])
    assert _log_rows(sqlite) == by_sqlalchemy
    assert by_sqlalchemy[0]["time"] == entries[0].time  # aware UTC, microseconds kept
    assert by_sqlalchemy[0]["rcpt_to"] == ["x@example.test", "ü@example.test"]


def test_conflicting_rows_are_skipped_when_asked(sqlite: Engine) -> None:
    with db.begin_write(sqlite) as conn:
        pk = conn.execute(
            insert(inbound_messages).returning(inbound_messages.c.id), message_row(make_message())
        ).scalar_one()
        messages.record_deliveries(conn, [(pk, "a@example.test"), (pk, "b@example.test")])
        messages.record_deliveries(conn, [(pk, "a@example.test"), (pk, "c@example.test")])
    with sqlite.connect() as conn:
        got = conn.execute(
            select(inbound_deliveries.c.address).order_by(inbound_deliveries.c.address)
        ).scalars().all()
        assert conn.execute(select(func.count()).select_from(inbound_deliveries)).scalar() == 3
    assert got == ["a@example.test", "b@example.test", "c@example.test"]


def test_a_python_side_default_cannot_be_left_out(sqlite: Engine) -> None:
    # delivered_at has default=utcnow: leaving it out would store NULL, not "now".
    with pytest.raises(ValueError, match="delivered_at"):
        RawInsert(inbound_deliveries, ["message_pk", "address"], sqlite.dialect)


def test_only_for_sqlite(pg_url: str) -> None:
    engine = db.make_engine(pg_url)
    try:
        with pytest.raises(ValueError, match="SQLite"):
            RawInsert(email_log, ["time"], engine.dialect)
    finally:
        engine.dispose()
