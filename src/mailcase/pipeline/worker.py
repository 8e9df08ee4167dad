"""Processes accepted messages from the spool into their destinations, exactly once.

A batch of messages is claimed and processed inside ONE database transaction: the destination
rows (unique per message and address), the state change to "processed" and the email-log
entries commit together or not at all, so a crash mid-processing leaves the messages
"received" and they are simply processed again; nothing can land twice.

The batch first goes through in bulk (a few statements for the whole batch: this runs beside
the SMTP accept path and must cost it little). If anything in it fails, the transaction is
rolled back and the batch is done again one message at a time, each in a savepoint: one that
fails is rolled back alone and moved to quarantine with its error, visible and retryable,
never dropped; the others still commit.

A destination may raise `DeferMessage` for a message that cannot be processed YET (a DNS
server that timed out while its sender had to be authenticated): that message is rolled back
alone, its attempt counted, and it is left "received" to be tried again after a back-off
(30 s doubling to 30 min), skipped by the batches in between; after `MAX_DEFERRALS` attempts it
is quarantined with the error (still visible and retryable, never dropped). The back-off is
kept in memory: after a restart the message is simply tried again.

A destination may also define ``prepare(engine, batch)``: slow work that needs no write lock
(parsing, DNS for SPF/DKIM/DMARC). On SQLite it runs before the write transaction opens, so
the SMTP acceptors' commits never wait behind it; on PostgreSQL right after claiming.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Protocol

from sqlalchemy.engine import Connection, Engine

from mailcase import eventloop, maillog
from mailcase.errors import DeferMessage
from mailcase.metrics import Metrics
from mailcase.pipeline.memory import TRIM_AFTER, release_free_memory
from mailcase.storage import messages
from mailcase.storage.db import begin_write, is_sqlite
from mailcase.storage.spool import LogEntry

__all__ = [
    "MAX_DEFERRALS",
    "AddressInbox",
    "DeferMessage",
    "Destination",
    "Pipeline",
    "process_batch",
    "process_pending",
]

log = logging.getLogger(__name__)

_MAX_ERROR = 2000
#: Attempts after which a message that keeps being deferred is quarantined.
MAX_DEFERRALS = 24
_DEFER_FIRST = 30.0
_DEFER_MAX = 1800.0


def _backoff(attempts: int) -> float:
    return float(min(_DEFER_MAX, _DEFER_FIRST * 2 ** max(0, attempts - 1)))


def _due(
    batch: Sequence[messages.MessageSummary], deferred: dict[int, float], limit: int
) -> list[messages.MessageSummary]:
    if not deferred:
        return list(batch[:limit])
    now = time.monotonic()
    for pk in [pk for pk, t in deferred.items() if t <= now]:
        del deferred[pk]
    return [m for m in batch if m.id not in deferred][:limit]


def _by_bytes(
    batch: list[messages.MessageSummary], limit: int
) -> list[messages.MessageSummary]:
    """The first messages of `batch` whose sizes add up to at most `limit` (at least one; 0 = no
    limit): a batch's memory (contents, parsed bodies, attachments) is bounded by its bytes."""
    if limit <= 0:
        return batch
    total = 0
    for i, m in enumerate(batch):
        total += m.size
        if total > limit and i > 0:
            return batch[:i]
    return batch


def _release(destinations: Sequence[Destination], batch_bytes: int) -> None:
    """Let destinations drop what `prepare` kept, so that nothing stays held between batches;
    after big messages, give the freed memory back (`memory`)."""
    for dest in destinations:
        release = getattr(dest, "release", None)
        if release is not None:
            release()
    if batch_bytes >= TRIM_AFTER:
        release_free_memory()


def _prepare(
    engine: Engine, destinations: Sequence[Destination], batch: Sequence[messages.MessageSummary]
) -> None:
    for dest in destinations:
        prepare = getattr(dest, "prepare", None)
        if prepare is not None:
            prepare(engine, batch)


class Destination(Protocol):
    """Where messages go; features (cases, services…) plug in here.

    Both methods write inside `conn`'s transaction, or raise. The content is read with
    `messages.load_content(conn, message.id)` when needed.
    """

    name: str

    def deliver(self, conn: Connection, message: messages.MessageSummary, address: str) -> None:
        """Deliver one message to one of its recipients."""

    def deliver_many(self, conn: Connection, batch: Sequence[messages.MessageSummary]) -> None:
        """Deliver every message of a batch to all its recipients (the fast path)."""


class AddressInbox:
    """Until Email-to-Case lands: the message is stored and marked received for its address."""

    name = "inbox"

    def deliver(self, conn: Connection, message: messages.MessageSummary, address: str) -> None:
        messages.record_delivery(conn, message.id, address)

    def deliver_many(self, conn: Connection, batch: Sequence[messages.MessageSummary]) -> None:
        messages.record_deliveries(conn, ((m.id, a) for m in batch for a in m.rcpt_to))


def _log_entry(m: messages.MessageSummary, outcome: str, reason: str | None) -> LogEntry:
    return messages.log_entry(m, outcome, reason)


class _BatchFailed(Exception):  # noqa: N818 - a signal to redo the batch one by one, never reported
    """The bulk path failed; the batch is redone one message at a time."""


def _bulk(
    conn: Connection,
    batch: list[messages.MessageSummary],
    destinations: Sequence[Destination],
    entries: list[LogEntry],
) -> list[tuple[str, str, str]]:
    mark = messages.log_mark(conn)
    for dest in destinations:
        dest.deliver_many(conn, batch)
    messages.mark_processed_many(conn, [m.id for m in batch])
    # One row per event: a destination that logged what it did (a case created, a sender
    # discarded) said it; the generic "processed" row is for the others.
    said = messages.logged_since(conn, mark, [m.queue_id for m in batch])
    messages.insert_logs(conn, [e for e in entries if e.queue_id not in said])
    names = ",".join(d.name for d in destinations)
    return [(m.queue_id, "processed", names) for m in batch]


def _one_by_one(
    conn: Connection,
    batch: list[messages.MessageSummary],
    destinations: Sequence[Destination],
    deferred: dict[int, float] | None = None,
) -> list[tuple[str, str, str]]:
    done: list[tuple[str, str, str]] = []
    names = ",".join(d.name for d in destinations)
    for m in batch:
        savepoint = conn.begin_nested()
        entry: LogEntry | None
        try:
            mark = messages.log_mark(conn)
            for address in m.rcpt_to:
                for dest in destinations:
                    dest.deliver(conn, m, address)
            messages.mark_processed(conn, m.id)
            said = messages.logged_since(conn, mark, [m.queue_id])
            savepoint.commit()
            entry = None if said else _log_entry(m, "processed", None)
            done.append((m.queue_id, "processed", names))
        except DeferMessage as e:
            savepoint.rollback()
            error = f"deferred: {e}"[:_MAX_ERROR]
            attempts = messages.record_failure(conn, m.id, error)
            if attempts >= MAX_DEFERRALS:
                messages.mark_quarantined(conn, m.id, f"gave up after {attempts} attempts: {e}")
                entry = _log_entry(m, "quarantined", error)
                done.append((m.queue_id, "quarantined", error))
            else:
                delay = e.delay if e.delay is not None else _backoff(attempts)
                if deferred is not None:
                    deferred[m.id] = time.monotonic() + delay
                log.warning("deferred %s for %.0f s: %s", m.queue_id, delay, e)
                reason = f"{error} (attempt {attempts}, retry in {delay:.0f} s)"
                entry = _log_entry(m, "deferred", reason)
                done.append((m.queue_id, "deferred", error))
        except Exception as e:  # noqa: BLE001 - any failure quarantines, never drops
            savepoint.rollback()
            error = f"{type(e).__name__}: {e}"[:_MAX_ERROR]
            log.warning("quarantined %s: %s", m.queue_id, error)
            messages.mark_quarantined(conn, m.id, error)
            entry = _log_entry(m, "quarantined", error)
            done.append((m.queue_id, "quarantined", error))
        if entry is not None:
            messages.insert_log(conn, entry)
    return done


def process_batch(
    engine: Engine,
    destinations: Sequence[Destination] = (AddressInbox(),),
    *,
    batch_size: int = 200,
    metrics: Metrics | None = None,
    deferred: dict[int, float] | None = None,
    batch_bytes: int = 0,
) -> int:
    """Process at most one batch of received messages; returns how many were handled.

    `deferred` (message id → monotonic time) holds the messages a destination deferred; they
    are skipped until their time comes. Pass the same dict on every call. A batch holds at most
    `batch_size` messages and `batch_bytes` bytes of them (at least one message; 0: no limit).
    """
    seen: list[messages.MessageSummary] = []
    try:
        return _process_batch(
            engine, destinations, batch_size, metrics, deferred, batch_bytes, seen
        )
    finally:
        _release(destinations, sum(m.size for m in seen))


def _process_batch(
    engine: Engine,
    destinations: Sequence[Destination],
    batch_size: int,
    metrics: Metrics | None,
    deferred: dict[int, float] | None,
    batch_bytes: int,
    seen: list[messages.MessageSummary],
) -> int:
    """`process_batch`; the messages taken are added to `seen`."""
    done: list[tuple[str, str, str]] = []
    waiting = {} if deferred is None else deferred
    try:
        if is_sqlite(engine):
            # Read outside the write lock (the SMTP acceptors' commits wait on it), then a
            # short write transaction; mark_processed_many refuses if anything changed.
            batch = _due(
                messages.peek_received(engine, batch_size + len(waiting)), waiting, batch_size
            )
            batch = _by_bytes(batch, batch_bytes)
            seen.extend(batch)
            if not batch:
                return 0
            _prepare(engine, destinations, batch)
            entries = [_log_entry(m, "processed", None) for m in batch]
            with begin_write(engine) as conn:
                try:
                    done = _bulk(conn, batch, destinations, entries)
                except Exception as e:  # find the culprit below
                    log.info("bulk processing failed (%s); retrying one by one", e)
                    raise _BatchFailed from e
        else:
            with begin_write(engine) as conn:
                batch = _due(
                    messages.claim_received(conn, batch_size + len(waiting)), waiting, batch_size
                )
                batch = _by_bytes(batch, batch_bytes)
                seen.extend(batch)
                if not batch:
                    return 0
                _prepare(engine, destinations, batch)
                entries = [_log_entry(m, "processed", None) for m in batch]
                try:
                    done = _bulk(conn, batch, destinations, entries)
                except Exception as e:  # find the culprit below
                    log.info("bulk processing failed (%s); retrying one by one", e)
                    raise _BatchFailed from e
    except _BatchFailed:
        with begin_write(engine) as conn:
            batch = _due(
                messages.claim_received(conn, batch_size + len(waiting)), waiting, batch_size
            )
            batch = _by_bytes(batch, batch_bytes)
            done = _one_by_one(conn, batch, destinations, waiting)
    for queue_id, outcome, detail in done:
        if outcome == "processed":
            maillog.processed(queue_id, destination=detail)
        elif outcome == "deferred":
            maillog.deferred_processing(queue_id, error=detail)
        else:
            maillog.quarantined(queue_id, error=detail)
        if metrics is not None:
            metrics.processed.labels(result=outcome).inc()
    return len(done)


def process_pending(
    engine: Engine,
    destinations: Sequence[Destination] = (AddressInbox(),),
    *,
    batch_size: int = 200,
    metrics: Metrics | None = None,
    deferred: dict[int, float] | None = None,
    batch_bytes: int = 0,
) -> int:
    """Process received messages until none is left (or only deferred ones are); returns how
    many were handled."""
    total = 0
    waiting = {} if deferred is None else deferred
    while n := process_batch(
        engine, destinations, batch_size=batch_size, metrics=metrics, deferred=waiting,
        batch_bytes=batch_bytes,
    ):
        total += n
    return total


class Pipeline:
    """Runs `process_batch` in a worker thread when woken by the spool, or on a timer.

    Processing runs beside the SMTP accept path in the same process and, on SQLite, behind the
    same write lock: after a wake-up it waits `gather` seconds so that one transaction takes
    many messages, and between full batches it steps back so the spool's commits go first.
    """

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics | None = None,
        destinations: Sequence[Destination] = (AddressInbox(),),
        *,
        batch_size: int = 200,
        poll_interval: float = 0.5,
        gather: float = 0.05,
        executor: Executor | None = None,
        catch_up: Executor | None = None,
        catch_up_after: float = 10.0,
        batch_bytes: int = 0,
    ) -> None:
        """`executor` runs the batches (default: asyncio's default thread pool). With a
        low-priority `executor`, `catch_up` (normal priority) takes over once processing has
        been behind (full batches only) for `catch_up_after` seconds: a burst is accepted
        first, but a flood does not pile up unprocessed for ever. `batch_bytes` bounds a
        batch's message bytes (see `process_batch`)."""
        self.engine, self.metrics, self.destinations = engine, metrics, destinations
        self.batch_size, self.poll_interval, self.gather = batch_size, poll_interval, gather
        self.executor, self.catch_up, self.catch_up_after = executor, catch_up, catch_up_after
        self.batch_bytes = batch_bytes
        self._behind_since: float | None = None
        self._wake = asyncio.Event()
        self._deferred: dict[int, float] = {}

    @property
    def current_executor(self) -> Executor | None:
        """Where processing runs now: `catch_up` while long behind, else `executor`."""
        if (
            self.catch_up is not None
            and self._behind_since is not None
            and time.monotonic() - self._behind_since >= self.catch_up_after
        ):
            return self.catch_up
        return self.executor

    def wake(self) -> None:
        """Called on the event loop after each durable accept."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                n = await asyncio.get_running_loop().run_in_executor(
                    self.current_executor,
                    functools.partial(
                        process_batch,
                        self.engine,
                        self.destinations,
                        batch_size=self.batch_size,
                        metrics=self.metrics,
                        deferred=self._deferred,
                        batch_bytes=self.batch_bytes,
                    ),
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the database may be briefly unavailable
                log.error("pipeline pass failed, will retry: %s", e)
                n = 0
            if n < self.batch_size:
                self._behind_since = None
            elif self._behind_since is None:
                self._behind_since = time.monotonic()
            # More may be waiting (a full batch, or one cut by bytes): let the spool commit first.
            if n >= self.batch_size or (n > 0 and self.batch_bytes > 0):
                await asyncio.sleep(self.gather)
                continue
            try:
                await eventloop.wait_for(self._wake.wait(), self.poll_interval)
            except TimeoutError:
                continue
            await asyncio.sleep(self.gather)
