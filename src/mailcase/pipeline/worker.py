"""Processes accepted messages from the spool into their destinations, exactly once.

A batch of messages is claimed and processed inside ONE database transaction: the destination
rows (unique per message and address), the state change to "processed" and the email-log
entries commit together or not at all, so a crash mid-processing leaves the message
"received" and it is simply processed again; it can never land twice. Each message runs in
a savepoint: one that fails is rolled back alone and moved to quarantine with its error,
visible and retryable, never dropped; the others in the batch still commit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.engine import Connection, Engine

from mailcase import maillog
from mailcase.metrics import Metrics
from mailcase.storage import messages
from mailcase.storage.db import begin_write
from mailcase.storage.spool import LogEntry

__all__ = ["AddressInbox", "Destination", "Pipeline", "process_pending"]

log = logging.getLogger(__name__)

_MAX_ERROR = 2000


class Destination(Protocol):
    """Where a message goes for one recipient; features (cases, services…) plug in here."""

    name: str

    def deliver(self, conn: Connection, message: messages.ClaimedMessage, address: str) -> None:
        """Write the message into the destination inside `conn`'s transaction, or raise.

        The content is read with `messages.load_content(conn, message.id)` when needed.
        """


class AddressInbox:
    """Until Email-to-Case lands: the message is stored and marked received for its address."""

    name = "inbox"

    def deliver(self, conn: Connection, message: messages.ClaimedMessage, address: str) -> None:
        messages.record_delivery(conn, message.id, address)


def _log_entry(m: messages.ClaimedMessage, outcome: str, reason: str | None) -> LogEntry:
    return LogEntry(
        time=dt.datetime.now(dt.UTC),
        direction="inbound",
        queue_id=m.queue_id,
        client_ip=m.client_ip,
        helo=m.helo,
        mail_from=m.mail_from,
        rcpt_to=tuple(m.rcpt_to),
        tls_version=m.tls_version,
        tls_cipher=m.tls_cipher,
        requiretls=m.requiretls,
        size=m.size,
        message_id=m.message_id,
        outcome=outcome,
        reply_code=None,
        reply_text=None,
        reason=reason,
    )


def process_pending(
    engine: Engine,
    destinations: Sequence[Destination] = (AddressInbox(),),
    *,
    batch_size: int = 100,
    metrics: Metrics | None = None,
) -> int:
    """Process received messages until none is left; returns how many were handled."""
    total = 0
    while True:
        done: list[tuple[str, str, str | None]] = []
        with begin_write(engine) as conn:
            claimed = messages.claim_received(conn, batch_size)
            if not claimed:
                break
            for m in claimed:
                savepoint = conn.begin_nested()
                try:
                    for address in m.rcpt_to:
                        for dest in destinations:
                            dest.deliver(conn, m, address)
                    messages.mark_processed(conn, m.id)
                    savepoint.commit()
                    entry = _log_entry(m, "processed", None)
                    done.append((m.queue_id, "processed", ",".join(d.name for d in destinations)))
                except Exception as e:  # noqa: BLE001 - any failure quarantines, never drops
                    savepoint.rollback()
                    error = f"{type(e).__name__}: {e}"[:_MAX_ERROR]
                    log.warning("quarantined %s: %s", m.queue_id, error)
                    messages.mark_quarantined(conn, m.id, error)
                    entry = _log_entry(m, "quarantined", error)
                    done.append((m.queue_id, "quarantined", error))
                messages.insert_log(conn, entry)
        for queue_id, outcome, detail in done:
            if outcome == "processed":
                maillog.processed(queue_id, destination=detail or "")
            else:
                maillog.quarantined(queue_id, error=detail or "")
            if metrics is not None:
                metrics.processed.labels(result=outcome).inc()
        total += len(claimed)
    return total


class Pipeline:
    """Runs `process_pending` in a worker thread when woken by the spool, or on a timer."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics | None = None,
        destinations: Sequence[Destination] = (AddressInbox(),),
        *,
        batch_size: int = 100,
        poll_interval: float = 0.5,
    ) -> None:
        self.engine, self.metrics, self.destinations = engine, metrics, destinations
        self.batch_size, self.poll_interval = batch_size, poll_interval
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Called on the event loop after each durable accept."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(
                    process_pending,
                    self.engine,
                    self.destinations,
                    batch_size=self.batch_size,
                    metrics=self.metrics,
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the database may be briefly unavailable
                log.error("pipeline pass failed, will retry: %s", e)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except TimeoutError:
                pass
