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
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from mailcase import maillog
from mailcase.inbound.received import received_header
from mailcase.mime import message_id
from mailcase.policy import Accept, RejectionTally
from mailcase.smtp.reasons import RejectReason
from mailcase.smtp.replies import SHUTTING_DOWN, STORAGE_FAILED, Reply, queued
from mailcase.smtp.server import (
    Close,
    EnvelopeRejected,
    MessageComplete,
    RcptRequest,
    ServerConnection,
    StartTLS,
    Throttle,
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


class SMTPSession(asyncio.Protocol):
    """asyncio protocol for one client; created by the listener for each connection."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.transport: asyncio.Transport | None = None
        self.conn: ServerConnection | None = None
        self.client_ip = "?"
        self.client_port = 0
        self._busy = False  # waiting for the spool, a TLS handshake or an error delay
        self._throttle: asyncio.TimerHandle | None = None
        self._rejections = RejectionTally(gateway.settings.inbound.rejection_log_limit)
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        # Which deadline rule applies (see _arm_timer): "idle" between commands, "line" once a
        # command line has begun, "message" while message content arrives.
        self._clock = "idle"
        self._received = 0  # octets from the peer not yet credited to the message deadline
        self._too_slow = False  # the message deadline is set by the rate, not by idleness
        self._greet_handle: asyncio.TimerHandle | None = None
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
        self.conn = ServerConnection(gw.protocol_settings, client_ip=self.client_ip)
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
        if self._throttle is not None:
            self._throttle.cancel()
            self._throttle = None
            self._busy = False
        self._log_rejection_summary()
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
        self._received += len(data)
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
    def _arm_timer(self) -> None:
        """Set the deadline for what the client owes us next.

        Moving one idle deadline on every byte let a client dripping a byte a second hold a
        connection forever (a few addresses filled the gateway). So:

        * Between commands: `command_timeout` from the last reply.
        * Inside a command line: `command_timeout` from the line's first octet; the bytes of
          the line move nothing, so the whole command must arrive in time.
        * Message content (DATA, or a BDAT transfer up to its LAST chunk): Postfix's
          `smtpd_min_data_rate` rule. The deadline starts `data_timeout` ahead; each read earns
          `octets / min_data_rate` seconds, but the deadline is never more than `data_timeout`
          away, so a silent client is cut off after `data_timeout` and a slow one once its
          average rate fell below `min_data_rate` for longer than the `data_timeout` grace.

        The timer itself is re-armed lazily: re-creating a TimerHandle after every command was
        a measurable share of the accept path's CPU, so a timer that fires early just sleeps
        again until the current deadline.
        """
        if self._closed or self._busy or self.conn is None:
            return
        conn = self.conn
        inbound = self.gw.settings.inbound
        loop = asyncio.get_running_loop()
        now = loop.time()
        received, self._received = self._received, 0
        if conn.in_message:
            timeout = inbound.data_timeout
            if self._clock != "message":
                self._clock = "message"
                self._too_slow = False
                deadline = now + timeout
            elif inbound.min_data_rate > 0:
                earned = self._deadline + received / inbound.min_data_rate
                self._too_slow = earned < now + timeout
                deadline = min(earned, now + timeout)
            else:
                deadline = now + timeout
        elif conn.mid_line:
            if self._clock == "line":
                return  # the line's deadline stands
            self._clock = "line"
            deadline = now + inbound.command_timeout
        else:
            self._clock = "idle"
            deadline = now + inbound.command_timeout
        self._deadline = deadline
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
        if self._clock == "message" and self._too_slow:
            self._on_timeout("minimum data rate", RejectReason.MINIMUM_DATA_RATE)
        else:
            self._on_timeout("timeout")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self, why: str, code: RejectReason = RejectReason.TIMEOUT) -> None:
        if self.conn is None or self._closed or self._busy:
            return
        maillog.event("smtpd", None, timeout=f"[{self.client_ip}]", reason=why)
        self.gw.metrics.count_rejection(code)
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
            elif isinstance(ev, Throttle):
                self._hold_back(ev.seconds)
            elif isinstance(ev, Close):
                self._flush()
                self._cancel_timer()
                if self.transport is not None:
                    self.transport.close()
                self._closed = True
                return
        if self._throttle is None:  # held back replies leave when the delay ends
            self._flush()
        self._arm_timer()

    def _start_io(self, coro: Coroutine[Any, Any, None]) -> None:
        self._busy = True  # the idle timer ignores a busy session (_end_io re-arms it)
        if self.transport is not None:
            self.transport.pause_reading()
        self._task = asyncio.ensure_future(coro)
        self.gw.tasks.add(self._task)
        self._task.add_done_callback(self.gw.tasks.discard)

    def _hold_back(self, seconds: float) -> None:
        """Past the soft error limit: keep the queued replies and stop reading for `seconds`.
        A timer of this session's own, so a prober slows only itself."""
        self._busy = True
        if self.transport is not None:
            self.transport.pause_reading()
        self._throttle = asyncio.get_running_loop().call_later(seconds, self._end_hold)

    def _end_hold(self) -> None:
        self._throttle = None
        self._end_io()

    def _end_io(self) -> None:
        self._busy = False
        if self._closed or self.transport is None or self.transport.is_closing():
            return
        self.transport.resume_reading()
        self._pump()

    # ----------------------------------------------------------------- RCPT
    def _on_rcpt(self, ev: RcptRequest) -> None:
        assert self.conn is not None
        rcpt = ev.recipient.address
        verdict = self.gw.addressbook.decide(rcpt, tls_active=self.conn.session.tls is not None)
        if isinstance(verdict, Accept):
            self.conn.accept_rcpt()
            return
        self.conn.reject_rcpt(verdict.reply)
        self._log_rejection(
            "RCPT", verdict.reply, ev.mail_from.address, [rcpt], verdict.reason, verdict.code
        )

    def _on_rejected(self, ev: EnvelopeRejected) -> None:
        mail_from = ev.mail_from.address if ev.mail_from is not None else None
        self._log_rejection(
            ev.stage, ev.reply, mail_from, [r.address for r in ev.recipients], ev.reason, ev.code
        )

    def _log_rejection(
        self,
        stage: str,
        reply: Reply,
        mail_from: str | None,
        rcpts: list[str],
        reason: str,
        code: RejectReason,
    ) -> None:
        assert self.conn is not None
        self.gw.metrics.count_rejection(code)  # `reason` may quote the client: never a label
        reply_text = " ".join(reply.lines())
        if not self._rejections.record(stage, reason, reply.code, reply_text, rcpts):
            return  # counted; summarised when the session ends (_log_rejection_summary)
        s = self.conn.session
        maillog.rejected(
            stage=stage,
            client_ip=self.client_ip,
            helo=s.helo,
            mail_from=mail_from,
            rcpt_to=rcpts,
            reply=str(reply),
            reason=reason,
        )
        self._log_entry(mail_from, rcpts, reply.code, reply_text, f"{stage}: {reason}")

    def _log_entry(
        self, mail_from: str | None, rcpts: list[str], code: int, text: str, reason: str
    ) -> None:
        assert self.conn is not None
        s = self.conn.session
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
                outcome="rejected" if code >= 500 else "deferred",
                reply_code=code,
                reply_text=text,
                reason=reason,
            )
        )

    def _log_rejection_summary(self) -> None:
        """At session end: one entry per kind of rejection beyond rejection_log_limit."""
        if self.conn is None:
            return
        for sm in self._rejections.summaries():
            why = f"{sm.stage}: {sm.reason} ({sm.count} more this session, summarised)"
            maillog.event(
                "smtpd",
                None,
                reject=sm.stage,
                client=f"[{self.client_ip}]",
                count=sm.count,
                samples=",".join(f"<{r}>" for r in sm.samples) or None,
                reply=f"{sm.reply_code} {sm.reply_text}",
                reason=why,
            )
            self._log_entry(None, sm.samples, sm.reply_code, sm.reply_text, why)

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
            # The core answers MAIL before HELO/EHLO with 503 (RFC 5321 §4.1.4), so it is set.
            helo=s.helo if s.helo is not None else "",
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
            gw.metrics.count_rejection(RejectReason.STORAGE_FAILURE)
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
        if self._throttle is not None:  # an error delay is not worth waiting for
            self._throttle.cancel()
            self._throttle = None
            self._busy = False
        if self._busy:
            return
        self.conn.refuse(SHUTTING_DOWN)
        self._pump()
