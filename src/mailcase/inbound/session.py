"""One SMTP connection: moves bytes between the socket and the sans-IO state machine.

The protocol rules live in `mailcase.smtp.server`; this class only reads, writes, runs
STARTTLS with asyncio's public `loop.start_tls`, keeps the deadlines and hands accepted
messages to the spool. Nothing is answered 250 before the spool says the message is durable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import random
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from mailcase import maillog
from mailcase.inbound.received import received_header
from mailcase.mime import message_id
from mailcase.policy import Accept, decide_recipient
from mailcase.smtp.replies import SHUTTING_DOWN, STORAGE_FAILED, Reply, queued
from mailcase.smtp.server import (
    Close,
    EnvelopeRejected,
    MessageComplete,
    RcptRequest,
    ServerConnection,
    StartTLS,
    TLSFacts,
)
from mailcase.storage.spool import LogEntry, SpooledMessage
from mailcase.tls import facts_from_ssl_object

if TYPE_CHECKING:
    from mailcase.inbound.gateway import Gateway

__all__ = ["SMTPSession", "new_queue_id", "set_queue_id_slot"]

log = logging.getLogger(__name__)

_queue_slot = 0
_queue_counter = itertools.count(random.getrandbits(24))


def set_queue_id_slot(slot: int) -> None:
    """Give this process's queue ids a slot of their own (an acceptor's index, 1–255)."""
    global _queue_slot  # noqa: PLW0603 - one value per process, set once at its start
    if not 0 <= slot <= 0xFF:
        raise ValueError(f"queue id slot must be 0-255, not {slot}")
    _queue_slot = slot


def new_queue_id() -> str:
    """16 hex digits: seconds since the epoch, this process's slot (2) and a counter (6).

    Sortable, and unique within an instance by construction: two processes never share a slot
    and a counter repeats only after 16.7 million ids. Random bits were not enough: the spool
    mover matches messages by queue id, and with 32 random bits two acceptors made the same id
    in the same second about once in five hours at 1 000 msg/s. The counter starts at a random
    value so that a restarted process is unlikely to repeat its predecessor's ids.
    """
    return f"{int(time.time()):08X}{_queue_slot:02X}{next(_queue_counter) & 0xFFFFFF:06X}"


def tls_label(tls: TLSFacts | None) -> str:
    return "plaintext" if tls is None else f"{tls.version}:{tls.cipher}"


@dataclass(slots=True)
class _DataClock:
    started: float = 0.0
    received: int = 0
    active: bool = False


class SMTPSession(asyncio.Protocol):
    """asyncio protocol for one client; created by the listener for each connection."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.transport: asyncio.Transport | None = None
        self.conn: ServerConnection | None = None
        self.client_ip = "?"
        self.client_port = 0
        self._busy = False  # waiting for the spool or a TLS handshake
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._greet_handle: asyncio.TimerHandle | None = None
        self._data = _DataClock()
        self._counted = False
        self._task: asyncio.Task[None] | None = None
        # Bytes that arrive over the new TLS layer before `start_tls` has returned to us. The
        # plaintext transport is paused before the handshake, so these can only be decrypted
        # data; the plaintext pipelined before the handshake was already dropped by the machine.
        self._tls_early: bytearray | None = None

    # ----------------------------------------------------------------- connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.client_ip, self.client_port = str(peer[0]), int(peer[1])
        gw = self.gw
        self.conn = ServerConnection(gw.server_settings, client_ip=self.client_ip)
        refusal = gw.tracker.admit(self.client_ip)
        if refusal is not None:
            reason, reply = refusal
            gw.metrics.connections_refused.labels(reason=reason).inc()
            maillog.event("smtpd", None, refuse=f"[{self.client_ip}]", reason=reason)
            self.conn.refuse(reply)
            self._pump()
            return
        self._counted = True
        gw.sessions.add(self)
        gw.metrics.connections.inc()
        gw.metrics.active_connections.inc()
        maillog.connect(self.client_ip, self.client_port)
        delay = gw.settings.inbound.greeting_delay
        if delay > 0:
            self._greet_handle = asyncio.get_running_loop().call_later(delay, self._greet)
        else:
            self._greet()

    def _greet(self) -> None:
        self._greet_handle = None
        if self.conn is None or self._closed:
            return
        self.conn.send_greeting()
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_timer()
        if self._greet_handle is not None:
            self._greet_handle.cancel()
        if self._counted:
            self._counted = False
            self.gw.tracker.release(self.client_ip)
            self.gw.sessions.discard(self)
            self.gw.metrics.active_connections.dec()
        if self.conn is not None and not self._busy:
            # Let the machine see EOF (it emits Close; nothing is stored for an open DATA).
            self.conn.receive_data(b"")

    def data_received(self, data: bytes) -> None:
        if self.conn is None or self._closed:
            return
        if self._tls_early is not None:
            self._tls_early += data
            return
        if self.conn.in_data:
            clock = self._data
            now = time.monotonic()
            if not clock.active:
                clock.active, clock.started, clock.received = True, now, 0
            clock.received += len(data)
            if self._too_slow(now):
                self._on_timeout("minimum data rate")
                return
        else:
            self._data.active = False
        self.conn.receive_data(data)
        self._pump()

    def eof_received(self) -> bool | None:
        if self.conn is not None:
            self.conn.receive_data(b"")
            self._pump()
        return None

    def pause_writing(self) -> None:
        # The client does not read its replies: stop reading its commands (bounded buffers).
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self._busy and not self.transport.is_closing():
            self.transport.resume_reading()

    # ----------------------------------------------------------------- deadlines
    def _too_slow(self, now: float) -> bool:
        rate = self.gw.settings.inbound.min_data_rate
        if rate <= 0:
            return False
        elapsed = now - self._data.started
        # Allow a full data_timeout window before judging the rate (a slow start is fine).
        return (
            elapsed > self.gw.settings.inbound.data_timeout and self._data.received / elapsed < rate
        )

    def _arm_timer(self) -> None:
        """Move the idle deadline forward. The timer itself is re-armed lazily: re-creating
        a TimerHandle after every command was a measurable share of the accept path's CPU, so
        a timer that fires early just sleeps again until the current deadline."""
        if self._closed or self._busy or self.conn is None:
            return
        inbound = self.gw.settings.inbound
        timeout = inbound.data_timeout if self.conn.in_data else inbound.command_timeout
        loop = asyncio.get_running_loop()
        self._deadline = deadline = loop.time() + timeout
        if self._timer is not None:
            if self._timer.when() <= deadline:
                return  # fires before the deadline and sleeps again then
            self._timer.cancel()  # a shorter timeout than the pending timer's
        self._timer = loop.call_at(deadline, self._deadline_reached)

    def _deadline_reached(self) -> None:
        self._timer = None
        if self._closed or self._busy or self.conn is None:
            return  # busy: _end_io arms it again
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._deadline_reached)
            return
        self._on_timeout("timeout")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self, why: str) -> None:
        if self.conn is None or self._closed or self._busy:
            return
        maillog.event("smtpd", None, timeout=f"[{self.client_ip}]", reason=why)
        self.gw.metrics.rejections.labels(reason=why.replace(" ", "_")).inc()
        self.conn.timeout()
        self._pump()

    # ----------------------------------------------------------------- event pump
    def _flush(self) -> None:
        if self.conn is None or self.transport is None:
            return
        out = self.conn.data_to_send()
        if out and not self.transport.is_closing():
            self.transport.write(out)

    def _pump(self) -> None:
        """Process events until the machine needs more input or we wait on I/O."""
        conn = self.conn
        if conn is None:
            return
        while not self._busy:
            ev = conn.next_event()
            if ev is None:
                break
            if isinstance(ev, RcptRequest):
                self._on_rcpt(ev)
            elif isinstance(ev, MessageComplete):
                self._start_io(self._store(ev))
            elif isinstance(ev, StartTLS):
                self._start_io(self._starttls())
            elif isinstance(ev, EnvelopeRejected):
                self._on_rejected(ev)
            elif isinstance(ev, Close):
                self._flush()
                self._cancel_timer()
                if self.transport is not None:
                    self.transport.close()
                self._closed = True
                return
        self._flush()
        self._arm_timer()

    def _start_io(self, coro: object) -> None:
        self._busy = True  # the idle timer ignores a busy session (_end_io re-arms it)
        if self.transport is not None:
            self.transport.pause_reading()
        self._task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self.gw.tasks.add(self._task)
        self._task.add_done_callback(self.gw.tasks.discard)

    def _end_io(self) -> None:
        self._busy = False
        self._data.active = False
        if self._closed or self.transport is None or self.transport.is_closing():
            return
        self.transport.resume_reading()
        self._pump()

    # ----------------------------------------------------------------- RCPT
    def _on_rcpt(self, ev: RcptRequest) -> None:
        assert self.conn is not None
        book = self.gw.addressbook
        tls_active = self.conn.session.tls is not None
        rcpt = ev.recipient.address
        verdict = decide_recipient(
            rcpt, book.rules, book.local_domains, tls_active=tls_active,
            routing_refusal=book.routing_refusal,
        )
        if not isinstance(verdict, Accept) and rcpt.lower() not in book.rules:
            if book.reload_on_miss():
                verdict = decide_recipient(
                    rcpt, book.rules, book.local_domains, tls_active=tls_active,
                    routing_refusal=book.routing_refusal,
                )
        if isinstance(verdict, Accept):
            self.conn.accept_rcpt()
            return
        self.conn.reject_rcpt(verdict.reply)
        self._log_rejection("RCPT", verdict.reply, ev.mail_from.address, [rcpt], verdict.reason)

    def _on_rejected(self, ev: EnvelopeRejected) -> None:
        mail_from = ev.mail_from.address if ev.mail_from is not None else None
        self._log_rejection(
            ev.stage, ev.reply, mail_from, [r.address for r in ev.recipients], ev.reason
        )

    def _log_rejection(
        self, stage: str, reply: Reply, mail_from: str | None, rcpts: list[str], reason: str
    ) -> None:
        assert self.conn is not None
        s = self.conn.session
        self.gw.metrics.rejections.labels(reason=reason.split(":")[0].replace(" ", "_")).inc()
        maillog.rejected(
            stage=stage,
            client_ip=self.client_ip,
            helo=s.helo,
            mail_from=mail_from,
            rcpt_to=rcpts,
            reply=str(reply),
            reason=reason,
        )
        self.gw.spool.log(
            LogEntry(
                time=dt.datetime.now(dt.UTC),
                direction="inbound",
                queue_id=None,
                client_ip=self.client_ip,
                helo=s.helo,
                mail_from=mail_from,
                rcpt_to=tuple(rcpts),
                tls_version=s.tls.version if s.tls else None,
                tls_cipher=s.tls.cipher if s.tls else None,
                requiretls=False,
                size=None,
                message_id=None,
                outcome="rejected" if reply.is_permanent else "deferred",
                reply_code=reply.code,
                reply_text=" ".join(reply.lines()),
                reason=f"{stage}: {reason}",
            )
        )

    # ----------------------------------------------------------------- DATA/BDAT
    async def _store(self, ev: MessageComplete) -> None:
        assert self.conn is not None
        env = ev.envelope
        s = env.session
        gw = self.gw
        queue_id = new_queue_id()
        now = dt.datetime.now(dt.UTC)
        rcpts = tuple(r.address for r in env.rcpt_to)
        content = ev.content
        # Prepend in place: a bytearray insert moves the bytes, it does not add a copy.
        content[0:0] = received_header(
            helo=s.helo,
            client_ip=self.client_ip,
            hostname=gw.settings.server.hostname,
            queue_id=queue_id,
            esmtp=s.esmtp,
            tls=s.tls,
            smtputf8=env.smtputf8,
            recipient=rcpts[0] if len(rcpts) == 1 else None,
            when=now,
        )
        msgid = message_id(content)
        tls = s.tls
        msg = SpooledMessage(
            queue_id=queue_id,
            received_at=now,
            client_ip=self.client_ip,
            helo=s.helo,
            mail_from=env.mail_from.address,
            rcpt_to=rcpts,
            tls_version=tls.version if tls else None,
            tls_cipher=tls.cipher if tls else None,
            tls_bits=tls.bits if tls else None,
            requiretls=env.requiretls,
            smtputf8=env.smtputf8,
            body_type=env.body,
            size=len(content),
            message_id=msgid,
            content=content,
        )
        ok = queued(queue_id)
        try:
            await gw.spool.store(msg, ok.code, " ".join(ok.lines()))
        except Exception as e:  # noqa: BLE001 - any storage failure is a 451, never a 250
            log.error("spool commit failed for %s: %s", queue_id, e)
            gw.metrics.rejections.labels(reason="storage_failure").inc()
            maillog.event("smtpd", queue_id, status="deferred", reason=f"storage failure: {e}")
            self.conn.answer_message(STORAGE_FAILED)
            self._end_io()
            return
        gw.metrics.accepted.labels(tls="yes" if tls else "no").inc()
        maillog.accepted(
            queue_id,
            client_ip=self.client_ip,
            helo=s.helo,
            mail_from=env.mail_from.address,
            rcpt_to=list(rcpts),
            size=len(content),
            tls=tls_label(tls),
            message_id=msgid,
        )
        gw.notify_stored()
        self.conn.answer_message(ok)
        self._end_io()

    # ----------------------------------------------------------------- STARTTLS
    async def _starttls(self) -> None:
        assert self.conn is not None and self.transport is not None
        # The 220 must reach the client before the handshake starts.
        self._flush()
        loop = asyncio.get_running_loop()
        gw = self.gw
        self._tls_early = bytearray()
        try:
            new_transport = await loop.start_tls(
                self.transport,
                self,
                gw.tls.context,
                server_side=True,
                ssl_handshake_timeout=gw.settings.inbound.tls_handshake_timeout,
            )
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError, RuntimeError) as e:
            gw.metrics.tls_handshakes.labels(result="failed").inc()
            maillog.event(
                "smtpd",
                None,
                starttls=f"[{self.client_ip}]",
                status="failed",
                reason=str(e) or type(e).__name__,
            )
            self._closed = True
            if self.transport is not None:
                self.transport.abort()
            self._busy = False
            return
        if new_transport is None:  # the peer went away during the handshake
            self._busy = False
            self._closed = True
            return
        self.transport = new_transport
        ssl_obj = new_transport.get_extra_info("ssl_object")
        facts = (
            facts_from_ssl_object(ssl_obj)
            if ssl_obj is not None
            else TLSFacts("unknown", "unknown", 0)
        )
        gw.metrics.tls_handshakes.labels(result="ok").inc()
        maillog.event("smtpd", None, starttls=f"[{self.client_ip}]", tls=tls_label(facts))
        self.conn.tls_established(facts)
        early, self._tls_early = self._tls_early, None
        if early:
            self.conn.receive_data(bytes(early))
        self._end_io()

    # ----------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Server stopping: idle sessions get 421 and are closed; busy ones finish first."""
        if self.conn is None or self._closed:
            return
        if self._busy:
            return
        self.conn.refuse(SHUTTING_DOWN)
        self._pump()
