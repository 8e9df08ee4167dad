"""Spooled inbound messages: listing for people, claiming and marking for the pipeline.

How the pipeline gets exactly-once processing:

1. Open a write transaction (`db.begin_write` or `db.write_session`) and `claim_received`.
   PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED``, so several workers (or nodes) take
   disjoint messages. SQLite: a plain SELECT; BEGIN IMMEDIATE already holds the database's
   write lock, so claimers run one after another. Keep these transactions short on SQLite:
   the spool waits for that lock too.
2. In the same transaction, write the message's effect (cases, activities …), call
   `record_delivery` per destination address (skip the effect when it returns False), then
   `mark_processed` and, if wanted, `insert_log` for the "processed" event. Commit. A crash
   before the commit undoes everything; the message is still "received" and is claimed
   again later. UNIQUE(message_pk, address) and the state check in `mark_processed` refuse
   a second processing even if two workers raced.
3. When a message cannot be processed, roll it back (a savepoint, or the transaction) and
   call `mark_quarantined` (or `record_failure` to count an attempt and leave it for a
   retry). Both take the message's id (int) or queue id (str).

Return values are frozen dataclasses: `MessageSummary` (no content) and `StoredMessage`.
Functions that change a message accept an Engine (they open their own write transaction) or
the Connection/Session of an open write transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Engine,
    Executable,
    Row,
    Select,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from mailcase.errors import StorageError
from mailcase.storage._records import LogEntry, log_row
from mailcase.storage.db import WRITE_OPTION, begin_write
from mailcase.storage.models import (
    MESSAGE_STATES,
    email_log,
    inbound_contents,
    inbound_deliveries,
    inbound_messages,
    utcnow,
)
from mailcase.storage.rawinsert import raw_insert
from mailcase.storage.sql import claim_rows, insert_ignore, is_sqlite

__all__ = [
    "MessageSummary",
    "StoredMessage",
    "claim_received",
    "insert_logs",
    "log_mark",
    "logged_since",
    "mark_processed_many",
    "record_deliveries",
    "load_content",
    "load_contents",
    "backlog_age",
    "oldest_received_at",
    "peek_received",
    "count_by_state",
    "get_message",
    "insert_log",
    "log_entry",
    "list_messages",
    "list_quarantined",
    "mark_processed",
    "mark_quarantined",
    "record_delivery",
    "record_failure",
    "retry_quarantined",
]

_m = inbound_messages
_d = inbound_deliveries
_c = inbound_contents

Executor = Connection | Session


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """A spooled message without its content: what `claim_received` returns (`load_content`
    reads the content when a destination needs it), so a batch of big messages is not all in
    memory at once."""

    id: int
    queue_id: str
    received_at: datetime
    client_ip: str
    helo: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    tls_version: str | None
    tls_cipher: str | None
    tls_bits: int | None
    requiretls: bool
    smtputf8: bool
    body_type: str | None
    size: int
    message_id: str | None
    state: str
    attempts: int
    error: str | None
    processed_at: datetime | None
    trusted_authserv_ids: tuple[str, ...] | None  # fetched mail (issue 19); None: SMTP


@dataclass(frozen=True, slots=True)
class StoredMessage(MessageSummary):
    """A spooled message with its full RFC 5322 content (our Received header included)."""

    content: bytes

_SUMMARY_COLUMNS = tuple(_m.c[name] for name in MessageSummary.__dataclass_fields__)
_FULL_COLUMNS = (*_SUMMARY_COLUMNS, _c.c.content)


_RCPT_INDEX = list(MessageSummary.__dataclass_fields__).index("rcpt_to")
_TRUST_INDEX = list(MessageSummary.__dataclass_fields__).index("trusted_authserv_ids")


def _summary(row: Row[*tuple[Any, ...]]) -> MessageSummary:
    # Positional: the columns are selected in field order (a dict per row cost more).
    values = list(row)
    values[_RCPT_INDEX] = tuple(values[_RCPT_INDEX])
    if values[_TRUST_INDEX] is not None:
        values[_TRUST_INDEX] = tuple(values[_TRUST_INDEX])
    return MessageSummary(*values)


def _stored(row: Row[*tuple[Any, ...]]) -> StoredMessage:
    values = row._asdict()
    values["rcpt_to"] = tuple(values["rcpt_to"])
    if values["trusted_authserv_ids"] is not None:
        values["trusted_authserv_ids"] = tuple(values["trusted_authserv_ids"])
    values["content"] = bytes(values["content"])
    return StoredMessage(**values)


def _check_state(state: str | None) -> None:
    if state is not None and state not in MESSAGE_STATES:
        raise ValueError(f"state must be one of {MESSAGE_STATES}, not {state!r}")


@contextmanager
def _writing(target: Engine | Executor) -> Iterator[Executor]:
    if isinstance(target, Engine):
        with begin_write(target) as conn:
            yield conn
    else:
        yield target


def _rowcount(conn: Executor, stmt: Executable) -> int:
    return int(cast(CursorResult[Any], conn.execute(stmt)).rowcount)


# -- reading -------------------------------------------------------------------------------
def list_messages(
    engine: Engine, state: str | None = None, limit: int = 100, *, before_id: int | None = None
) -> list[MessageSummary]:
    """Newest first; `before_id` pages on (pass the last id of the previous page)."""
    _check_state(state)
    stmt: Select[Any] = select(*_SUMMARY_COLUMNS).order_by(_m.c.id.desc()).limit(limit)
    if state is not None:
        stmt = stmt.where(_m.c.state == state)
    if before_id is not None:
        stmt = stmt.where(_m.c.id < before_id)
    with engine.connect() as conn:
        return [_summary(r) for r in conn.execute(stmt)]


def list_quarantined(engine: Engine, limit: int = 100) -> list[MessageSummary]:
    """Quarantined messages, newest first."""
    return list_messages(engine, "quarantined", limit)


def get_message(engine: Engine, queue_id: str) -> StoredMessage | None:
    """One message with its content, or None."""
    with engine.connect() as conn:
        row = conn.execute(
            select(*_FULL_COLUMNS)
            .join_from(_m, _c, _c.c.message_pk == _m.c.id)
            .where(_m.c.queue_id == queue_id)
        ).first()
    return None if row is None else _stored(row)


def count_by_state(engine: Engine) -> dict[str, int]:
    """How many messages are in each state (every state present, zero included)."""
    with engine.connect() as conn:
        rows = conn.execute(select(_m.c.state, func.count()).group_by(_m.c.state)).all()
    counts = dict.fromkeys(MESSAGE_STATES, 0)
    counts.update({state: int(n) for state, n in rows})
    return counts


# -- the pipeline --------------------------------------------------------------------------
def claim_received(conn: Executor, limit: int) -> list[MessageSummary]:
    """Take up to `limit` received messages, oldest first, locked for this transaction.

    The content is not read here; see `load_content`.

    Must run inside a write transaction (`db.begin_write` / `db.write_session`); on SQLite
    anything else is refused, because a deferred transaction would not hold the lock.
    """
    if is_sqlite(conn):
        raw = conn.connection() if isinstance(conn, Session) else conn
        if not (raw.in_transaction() and raw.get_execution_options().get(WRITE_OPTION)):
            raise StorageError("claim_received needs a write transaction (db.begin_write)")
    stmt = claim_rows(
        select(*_SUMMARY_COLUMNS).where(_m.c.state == "received").order_by(_m.c.id).limit(limit)
    )
    return [_summary(r) for r in conn.execute(stmt)]


def oldest_received_at(engine: Engine) -> datetime | None:
    """When the oldest message still waiting for processing was received (None: none waits).

    One probe of the (state, id) index: ids grow with receipt, so the first is the oldest."""
    stmt = select(_m.c.received_at).where(_m.c.state == "received").order_by(_m.c.id).limit(1)
    with engine.connect() as conn:
        value: datetime | None = conn.execute(stmt).scalar()
    return value


def backlog_age(engine: Engine) -> float | None:
    """Seconds the oldest unprocessed message has waited (None: none waits): the metric that
    says whether processing keeps up (issue 13)."""
    oldest = oldest_received_at(engine)
    return None if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())


def peek_received(engine: Engine, limit: int) -> list[MessageSummary]:
    """Up to `limit` received messages, oldest first, read without taking the write lock.

    For a single-node SQLite pipeline: it reads here, then writes in a short transaction whose
    `mark_processed_many` refuses (StorageError) if any of them is no longer "received", so
    nothing is processed twice. Several nodes on PostgreSQL use `claim_received` instead.
    """
    stmt = select(*_SUMMARY_COLUMNS).where(_m.c.state == "received").order_by(_m.c.id).limit(limit)
    with engine.connect() as conn:
        return [_summary(r) for r in conn.execute(stmt)]


def load_content(conn: Executor, message_pk: int) -> bytes:
    """The stored RFC 5322 bytes of one message; StorageError if it does not exist."""
    value = conn.execute(select(_c.c.content).where(_c.c.message_pk == message_pk)).scalar()
    if value is None:
        raise StorageError(f"message {message_pk} has no stored content")
    return bytes(value)


def load_contents(conn: Executor, message_pks: Sequence[int]) -> dict[int, bytes]:
    """The stored bytes of several messages, one query per 500 (a batch reads its messages
    together: issue 13). StorageError if any has no stored content."""
    found: dict[int, bytes] = {}
    for i in range(0, len(message_pks), 500):
        chunk = list(message_pks[i : i + 500])
        rows = conn.execute(select(_c.c.message_pk, _c.c.content).where(_c.c.message_pk.in_(chunk)))
        found.update((int(pk), bytes(content)) for pk, content in rows if content is not None)
    missing = [pk for pk in message_pks if pk not in found]
    if missing:
        raise StorageError(f"message {missing[0]} has no stored content")
    return found


def record_delivery(conn: Executor, message_pk: int, address: str) -> bool:
    """Record that the message reached `address`; False if that was already recorded."""
    values = {"message_pk": message_pk, "address": address, "delivered_at": utcnow()}
    stmt = insert_ignore(conn, _d).values(**values)
    # RETURNING says whether a row went in (rowcount is -1 with PostgreSQL's RETURNING).
    return conn.execute(stmt.returning(_d.c.id)).first() is not None


def mark_processed(conn: Executor, message_pk: int, addresses: Iterable[str] = ()) -> None:
    """Record deliveries to `addresses` and mark the message processed, in `conn`'s transaction.

    StorageError if the message is not in state "received" any more (someone else processed
    or quarantined it): roll back, so that its effects are not written twice.
    """
    for address in addresses:
        record_delivery(conn, message_pk, address)
    n = _rowcount(
        conn,
        update(_m)
        .where(_m.c.id == message_pk, _m.c.state == "received")
        .values(
            state="processed", processed_at=utcnow(), error=None, attempts=_m.c.attempts + 1
        ),
    )
    if n != 1:
        raise StorageError(f"message {message_pk} is not in state 'received'")


_DELIVERY_COLUMNS = ("message_pk", "address", "delivered_at")
_LOG_COLUMNS = tuple(c.name for c in email_log.columns if c.name != "id")


def record_deliveries(conn: Executor, pairs: Iterable[tuple[int, str]]) -> None:
    """Bulk `record_delivery` for (message_pk, address) pairs: one statement for a batch.

    Pairs already recorded are skipped (the unique pair is what makes processing exactly-once).
    """
    now = utcnow()
    rows = [{"message_pk": pk, "address": a, "delivered_at": now} for pk, a in pairs]
    if not rows:
        return
    if isinstance(conn, Connection) and is_sqlite(conn):
        raw_insert(_d, _DELIVERY_COLUMNS, conn.dialect, skip_conflicts=True).executemany(conn, rows)
        return
    conn.execute(insert_ignore(conn, _d), rows)


def mark_processed_many(conn: Executor, message_pks: Sequence[int]) -> None:
    """Bulk `mark_processed`; StorageError (roll back!) unless every one was "received"."""
    if not message_pks:
        return
    n = _rowcount(
        conn,
        update(_m)
        .where(_m.c.id.in_(message_pks), _m.c.state == "received")
        .values(
            state="processed", processed_at=utcnow(), error=None, attempts=_m.c.attempts + 1
        ),
    )
    if n != len(message_pks):
        raise StorageError(f"{len(message_pks) - n} message(s) not in state 'received' any more")


def log_mark(conn: Connection) -> int:
    """The highest email-log id now: rows this transaction writes after it have higher ids
    (a sequence or SQLite's rowid only grows), which `logged_since` finds."""
    return int(conn.execute(select(func.max(email_log.c.id))).scalar() or 0)


def logged_since(conn: Connection, mark: int, queue_ids: Sequence[str]) -> set[str]:
    """Which of `queue_ids` got an inbound email-log row after `mark` (in this transaction:
    the messages are claimed by it). The pipeline writes its generic "processed" row only
    for the others: one row per event, not a second blank one."""
    if not queue_ids:
        return set()
    rows = conn.execute(
        select(email_log.c.queue_id).distinct().where(
            email_log.c.id > mark, email_log.c.direction == "inbound",
            email_log.c.queue_id.in_(list(queue_ids)),
        )
    )
    return {str(q) for q in rows.scalars()}


def insert_logs(conn: Executor, entries: Iterable[LogEntry]) -> None:
    """Bulk `insert_log`."""
    rows = [log_row(e) for e in entries]
    if not rows:
        return
    if isinstance(conn, Connection) and is_sqlite(conn):
        raw_insert(email_log, _LOG_COLUMNS, conn.dialect).executemany(conn, rows)
    else:
        conn.execute(insert(email_log), rows)


def _which(message: int | str) -> ColumnElement[bool]:
    """A message by primary key (int) or queue id (str)."""
    if isinstance(message, int):
        return _m.c.id == message
    return _m.c.queue_id == message


def mark_quarantined(target: Engine | Executor, message: int | str, error: str) -> bool:
    """Set a received message (by id or queue id) aside with `error`.

    False if it is not in state "received".
    """
    with _writing(target) as conn:
        n = _rowcount(
            conn,
            update(_m)
            .where(_which(message), _m.c.state == "received")
            .values(state="quarantined", error=error, attempts=_m.c.attempts + 1),
        )
    return bool(n)


def record_failure(target: Engine | Executor, message: int | str, error: str) -> int:
    """Count a failed attempt on a received message (by id or queue id); it stays "received".

    Returns the new attempt count, or 0 if the message is not in state "received".
    """
    with _writing(target) as conn:
        n = _rowcount(
            conn,
            update(_m)
            .where(_which(message), _m.c.state == "received")
            .values(error=error, attempts=_m.c.attempts + 1),
        )
        if not n:
            return 0
        return int(conn.execute(select(_m.c.attempts).where(_which(message))).scalar_one())


def log_entry(message: MessageSummary, outcome: str, reason: str | None = None) -> LogEntry:
    """An inbound email-log entry about a stored message (processed, case created, …),
    carrying the message's envelope and session facts."""
    return LogEntry(
        time=utcnow(),
        direction="inbound",
        queue_id=message.queue_id,
        client_ip=message.client_ip,
        helo=message.helo,
        mail_from=message.mail_from,
        rcpt_to=tuple(message.rcpt_to),
        tls_version=message.tls_version,
        tls_cipher=message.tls_cipher,
        requiretls=message.requiretls,
        size=message.size,
        message_id=message.message_id,
        outcome=outcome,
        reason=reason[:2000] if reason is not None else None,
    )


def insert_log(conn: Executor, entry: LogEntry) -> None:
    """Write an email-log entry in `conn`'s transaction (e.g. "processed" with its effects)."""
    conn.execute(insert(email_log), [log_row(entry)])


def retry_quarantined(engine: Engine, queue_id: str | None = None) -> int:
    """Put one quarantined message (or all, if `queue_id` is None) back to "received".

    The attempt count is kept; the error is cleared. Returns how many were put back.
    """
    stmt = (
        update(_m).where(_m.c.state == "quarantined").values(state="received", error=None)
    )
    if queue_id is not None:
        stmt = stmt.where(_m.c.queue_id == queue_id)
    with begin_write(engine) as conn:
        return _rowcount(conn, stmt)
