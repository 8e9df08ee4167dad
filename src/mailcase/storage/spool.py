"""The durable accept path: the 250 after DATA waits for `Spool.store`, which waits for a commit.

Why this shape (DESIGN.md "Durability", "Performance notes"):

- One writer thread per process owns the writes. The event loop never touches the database:
  `store` puts the message on a queue and awaits a future that the writer resolves with
  ``loop.call_soon_threadsafe`` once the transaction has committed (SQLite: WAL fsynced,
  ``synchronous=FULL``; PostgreSQL: ``synchronous_commit`` on).
- Group commit without a fixed wait: the writer takes everything that arrived while the
  previous commit ran and commits it in one transaction (Core ``insert()`` with executemany; no
  ORM objects). Under load batches grow by themselves; when idle a lone message commits at
  once. A fixed wait was measured slower.
- A failed batch must not fail its innocent members: when the error is about a row (a
  duplicate queue id, a value the database refuses) each message is retried in its own
  transaction and only the guilty one gets `SpoolCommitError` (the server answers 451). When
  the error is about the database (locked past the busy timeout, disk full, connection lost,
  read-only) the whole batch fails at once rather than each message waiting out the same
  failure again.
- Several processes may each run a Spool on the same database: SQLite serialises them with
  BEGIN IMMEDIATE and its busy timeout, PostgreSQL needs nothing special.

Log entries given to `log` are fire-and-forget: they ride along with the next commit.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from mailcase.errors import SpoolCommitError, StorageError
from mailcase.storage._records import (
    ACCEPTED_LOG_FROM_MESSAGE,
    LogEntry,
    SpooledMessage,
    accepted_log_row,
    clean_text,
    log_row,
    message_row,
)
from mailcase.storage.db import WRITE_OPTION, write_lock
from mailcase.storage.models import email_log, inbound_contents, inbound_messages
from mailcase.storage.rawinsert import RawInsert
from mailcase.storage.sql import BLOB_STREAM_MIN, immediate, insert_streamed, is_sqlite

__all__ = ["LogEntry", "Spool", "SpooledMessage"]

_log = logging.getLogger(__name__)

_messages = inbound_messages
_email_log = email_log
_contents = inbound_contents

# A batch stops growing past either bound, so one burst does not become one giant transaction.
_MAX_BATCH_MESSAGES = 1000
_MAX_BATCH_BYTES = 64 * 1024 * 1024
# PostgreSQL: a statement stuck this long (locks, a hung server) fails the batch (451)
# rather than keeping senders waiting.
_PG_STATEMENT_TIMEOUT_MS = 30_000

_STOP = object()
# SQLite: content at least this big is written with incremental blob I/O instead of being
# bound as a parameter, which would copy it twice more (the bound value and the record).
_STREAM_MIN_BYTES = BLOB_STREAM_MIN


@dataclass(slots=True)
class _Pending:
    msg: SpooledMessage
    reply_code: int
    reply_text: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


def _is_row_error(exc: BaseException) -> bool:
    """True when `exc` is about the data of a row, not about the database as a whole."""
    if isinstance(exc, IntegrityError | DataError | sqlite3.IntegrityError | sqlite3.DataError):
        return True
    if isinstance(exc, sqlite3.Error):  # raised by the raw SQLite path, not wrapped
        return False
    # Anything else the driver raised (OperationalError, ProgrammingError, …) is about the
    # database; errors raised before the driver (bad values, type errors) are about the row.
    return not isinstance(exc, DBAPIError)


def _settle(
    futures: list[asyncio.Future[None]], error: str | None, cause: BaseException | None
) -> None:
    """Runs in the event loop: resolve every future still waiting (one exception each)."""
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            exc = SpoolCommitError(error, refused=cause is not None and _is_row_error(cause))
            exc.__cause__ = cause
            future.set_exception(exc)


def _resolve(
    pending: list[_Pending], error: str | None = None, cause: BaseException | None = None
) -> None:
    """From the writer thread: one wake-up per event loop, not one per message."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for p in pending:
        by_loop.setdefault(p.loop, []).append(p.future)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, futures, error, cause)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


class _RawSQLiteInserts:
    """The spool's transaction on SQLite through the sqlite3 connection (`RawInsert`: on the
    accept path SQLAlchemy's per-row work cost more CPU than SQLite itself, about 70 µs a
    message, under the GIL beside the SMTP sessions). PostgreSQL keeps the SQLAlchemy path."""

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        # message_row/log_row give every column that has a server default; the rest is NULL.
        self._msg = RawInsert(_messages, [c.name for c in _messages.columns if c.name != "id"],
                              dialect)
        self._log = RawInsert(_email_log, [c.name for c in _email_log.columns if c.name != "id"],
                              dialect)
        self._content_sql = f"INSERT INTO {_contents.name} (message_pk, content) VALUES (?, ?)"  # noqa: S608 - names from our metadata
        log_cols = ", ".join(ACCEPTED_LOG_FROM_MESSAGE)
        msg_cols = ", ".join(ACCEPTED_LOG_FROM_MESSAGE.values())
        self._accepted_sql = (
            f"INSERT INTO {_email_log.name} ({log_cols}, direction, outcome, reply_code, "  # noqa: S608 - names from our metadata
            f"reply_text) SELECT {msg_cols}, 'inbound', 'accepted', ?, ? "
            f"FROM {_messages.name} WHERE id = ?"
        )

    def transaction(
        self,
        conn: Connection,
        pending: list[_Pending],
        msg_rows: list[dict[str, Any]],
        log_rows: list[dict[str, Any]],
    ) -> None:
        """The inserts in one BEGIN IMMEDIATE … COMMIT on the driver connection (the caller
        holds the write lock): SQLAlchemy's transaction bookkeeping and begin event cost about
        as much as the inserts of a small batch. Each message's "accepted" log entry is copied
        from its row in SQL."""
        raw: Any = conn.connection.driver_connection
        cur = raw.cursor()
        try:
            with immediate(raw):
                accepted = []
                for p, row in zip(pending, msg_rows, strict=True):
                    pk = self._msg.execute(cur, row)
                    content = p.msg.content
                    if len(content) < _STREAM_MIN_BYTES:
                        cur.execute(self._content_sql, (pk, content))
                    else:
                        insert_streamed(raw, _contents.name, {"message_pk": pk}, "content",
                                        content)
                    accepted.append((p.reply_code, clean_text(p.reply_text), pk))
                if accepted:
                    cur.executemany(self._accepted_sql, accepted)
                if log_rows:
                    cur.executemany(self._log.sql, [self._log.params(r) for r in log_rows])
        finally:
            cur.close()


class Spool:
    """Durable message store with group commit; see the module docstring."""

    def __init__(
        self, engine: Engine, *, on_commit: Callable[[int, float], None] | None = None
    ) -> None:
        """`on_commit(batch_size, seconds)` is called from the writer thread after each commit;
        `batch_size` counts the messages made durable (0 for a commit of log entries only)."""
        self._engine = engine
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._carry: Any = None  # an item taken off the queue that did not fit the last batch
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._conn: Connection | None = None
        self._inflight: list[_Pending] = []
        self._raw = _RawSQLiteInserts(engine) if is_sqlite(engine) else None

    # -- public API ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer thread (once)."""
        with self._lock:
            if self._closed:
                raise StorageError("spool is closed")
            if self._thread is not None:
                raise StorageError("spool already started")
            self._thread = threading.Thread(
                target=self._run, name="mailcase-spool-writer", daemon=True
            )
            self._thread.start()

    async def store(self, msg: SpooledMessage, reply_code: int, reply_text: str) -> None:
        """Return once `msg` and its email-log entry "accepted" with this reply (the one the
        client gets next) are committed; raise SpoolCommitError if they are not.

        Cancelling the caller does not withdraw the message: it may still be committed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            thread = self._thread
            if self._closed or thread is None or not thread.is_alive():
                raise SpoolCommitError("spool is not running")
            self._queue.put(_Pending(msg, reply_code, reply_text, loop, future))
        await future

    def log(self, entry: LogEntry) -> None:
        """Queue `entry` for the next commit; never blocks, never waits for the disk."""
        with self._lock:
            if self._closed:
                _log.warning("spool closed: log entry dropped (%s %s)", entry.outcome,
                             entry.queue_id)
                return
            self._queue.put(entry)

    def close(self) -> None:
        """Commit everything queued, then stop the writer thread. Idempotent; blocks."""
        with self._lock:
            first = not self._closed
            if first:
                self._closed = True
                self._queue.put(_STOP)
            thread = self._thread
        if thread is not None:
            if thread is not threading.current_thread():
                thread.join()
        elif first:  # never started: write the queued log entries here
            self._run()

    # -- writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            stop = False
            while not stop:
                pending, logs, stop = self._take_batch()
                self._inflight = pending
                if pending or logs:
                    self._commit_batch(pending, logs)
                self._inflight = []
        except BaseException as exc:  # noqa: BLE001 - a bug: fail the waiters rather than hang them
            _log.exception("spool writer crashed")
            with self._lock:
                self._closed = True
            self._fail_queued(f"spool writer crashed: {exc!r}", exc)
        finally:
            self._drop_connection()

    def _take_batch(self) -> tuple[list[_Pending], list[LogEntry], bool]:
        """Block for the first item, then take whatever else is already queued."""
        pending: list[_Pending] = []
        logs: list[LogEntry] = []
        size = 0
        item = self._carry if self._carry is not None else self._queue.get()
        self._carry = None
        while True:
            if item is _STOP:
                return pending, logs, True
            if isinstance(item, _Pending):
                n = len(item.msg.content)
                if pending and (
                    len(pending) >= _MAX_BATCH_MESSAGES or size + n > _MAX_BATCH_BYTES
                ):
                    self._carry = item
                    return pending, logs, False
                pending.append(item)
                size += n
            else:
                logs.append(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return pending, logs, False

    def _fail_queued(self, error: str, cause: BaseException) -> None:
        items: list[Any] = list(self._inflight)
        if self._carry is not None:
            items.append(self._carry)
        self._carry = None
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        _resolve([i for i in items if isinstance(i, _Pending)], error, cause)

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
            self._conn.execution_options(**{WRITE_OPTION: True})  # BEGIN IMMEDIATE on SQLite
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken; the pool discards it
                _log.debug("closing spool connection failed", exc_info=True)

    def _write(self, pending: list[_Pending], logs: list[LogEntry]) -> float:
        """One transaction for `pending` and `logs`; returns the seconds it took.

        Rows are built before the write lock is taken, so that the lock is held only for the
        statements and the commit (other acceptor processes wait on it).
        """
        started = time.perf_counter()
        msg_rows = [message_row(p.msg) for p in pending]
        log_rows = [log_row(e) for e in logs]
        conn = self._connection()
        try:
            if self._raw is not None:
                with write_lock(self._engine):
                    self._raw.transaction(conn, pending, msg_rows, log_rows)
                return time.perf_counter() - started
            log_rows[:0] = [
                accepted_log_row(row, p.reply_code, p.reply_text)
                for p, row in zip(pending, msg_rows, strict=True)
            ]
            with write_lock(self._engine), conn.begin():  # PostgreSQL
                conn.execute(text(f"SET LOCAL statement_timeout = {_PG_STATEMENT_TIMEOUT_MS}"))
                if pending:
                    self._insert_messages(conn, pending, msg_rows)
                if log_rows:
                    conn.execute(insert(_email_log), log_rows)
        except BaseException as exc:
            if not _is_row_error(exc):
                self._drop_connection()  # start again from a fresh connection
            raise
        return time.perf_counter() - started

    def _insert_messages(
        self, conn: Connection, pending: list[_Pending], rows: list[dict[str, Any]]
    ) -> None:
        """PostgreSQL: message rows (one executemany, ids returned in order), then their
        contents (SQLite goes through `_RawSQLiteInserts`)."""
        ids = (
            conn.execute(
                insert(_messages).returning(_messages.c.id, sort_by_parameter_order=True), rows
            )
            .scalars()
            .all()
        )
        conn.execute(
            insert(_contents),
            [{"message_pk": pk, "content": p.msg.content}
             for pk, p in zip(ids, pending, strict=True)],
        )

    def _commit_batch(self, pending: list[_Pending], logs: list[LogEntry]) -> None:
        try:
            seconds = self._write(pending, logs)
        except Exception as exc:  # noqa: BLE001 - the batch's waiters get the error (451), never a 250
            if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                # The connection was dead (server restart, idle timeout): one more go.
                try:
                    seconds = self._write(pending, logs)
                except Exception as exc2:  # noqa: BLE001 - the batch's waiters get the error (451), never a 250
                    exc = exc2
                else:
                    self._committed(pending, seconds)
                    return
            if _is_row_error(exc) and len(pending) + len(logs) > 1:
                self._commit_one_by_one(pending, logs)
            else:
                self._failed(pending, logs, exc)
            return
        self._committed(pending, seconds)

    def _commit_one_by_one(self, pending: list[_Pending], logs: list[LogEntry]) -> None:
        broken: Exception | None = None  # set once the database itself fails
        for p in pending:
            if broken is not None:
                self._failed([p], [], broken)
                continue
            try:
                seconds = self._write([p], [])
            except Exception as exc:  # noqa: BLE001 - this message's waiter gets the error (451)
                self._failed([p], [], exc)
                if not _is_row_error(exc):
                    broken = exc
            else:
                self._committed([p], seconds)
        if not logs:
            return
        if broken is not None:
            self._failed([], logs, broken)
            return
        try:
            self._committed([], self._write([], logs))
        except Exception:  # noqa: BLE001 - retried one entry at a time below
            for entry in logs:
                try:
                    self._committed([], self._write([], [entry]))
                except Exception as exc:  # noqa: BLE001 - that entry is reported failed; the others are kept
                    self._failed([], [entry], exc)

    def _committed(self, pending: list[_Pending], seconds: float) -> None:
        # Metrics first: a waiter that wakes up may read them at once.
        if self._on_commit is not None:
            try:
                self._on_commit(len(pending), seconds)
            except Exception:  # noqa: BLE001 - a metrics callback never fails a commit
                _log.exception("spool on_commit callback failed")
        _resolve(pending)

    def _failed(self, pending: list[_Pending], logs: list[LogEntry], exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc}"
        for p in pending:
            _log.error("spool commit failed for %s: %s", p.msg.queue_id, reason)
        if logs:
            _log.error("spool dropped %d log entries: %s", len(logs), reason)
        if pending:
            _resolve(pending, f"message not stored: {reason}", exc)
