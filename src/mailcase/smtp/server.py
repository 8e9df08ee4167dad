"""The SMTP server state machine: bytes in, replies and events out (sans-IO, like h11).

Why sans-IO: the protocol rules (sequencing, limits, smuggling and STARTTLS-injection defences)
are then plain functions of the input, tested with transcripts and fuzzing, while the asyncio
shell in `inbound/` only moves bytes, runs the TLS handshake and asks policy/storage.

Driving it::

    conn = ServerConnection(settings, client_ip="192.0.2.1")
    conn.send_greeting()
    while True:
        ev = conn.next_event()
        if ev is None:            # write conn.data_to_send(), then read and receive_data()
            ...
        elif isinstance(ev, RcptRequest):
            conn.accept_rcpt()    # or conn.reject_rcpt(reply)
        elif isinstance(ev, MessageComplete):
            conn.answer_message(reply)   # after the message is durable
        elif isinstance(ev, StartTLS):
            ...                   # write conn.data_to_send(), handshake, conn.tls_established()
        elif isinstance(ev, Throttle):
            ...                   # wait ev.seconds (this session only), then carry on
        elif isinstance(ev, Close):
            ...                   # write conn.data_to_send(), then close the transport

The machine reads no further input while an answer is pending, so replies to pipelined commands
(RFC 2920) always leave in order. It buffers what `receive_data` gives it; the shell should stop
reading from the socket while it waits on policy or storage.

Input from the peer never raises (a peer breaking the protocol gets a reply, and an
`EnvelopeRejected` or `Close` event); misuse of this API raises `LocalProtocolError`.

Which command may come when is one table, `_SEQUENCE` (verb × `Phase` → refusal), in the
manner of h11's transition tables.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from mailcase.errors import LocalProtocolError
from mailcase.smtp import replies as R
from mailcase.smtp.address import AddressError, Path, parse_mail_from, parse_rcpt_to
from mailcase.smtp.dotstuff import BareNewlinePolicy, ChunkReader, DataReader, DataResult
from mailcase.smtp.reasons import RejectReason
from mailcase.smtp.replies import Reply

__all__ = [
    "Close",
    "EnvelopeRejected",
    "InboundEnvelope",
    "Event",
    "MessageComplete",
    "Phase",
    "RcptRequest",
    "ServerConnection",
    "ProtocolSettings",
    "SessionInfo",
    "Stage",
    "StartTLS",
    "State",
    "TLSFacts",
    "Throttle",
]


# --- Settings and facts -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProtocolSettings:
    """Per-listener limits and switches; defaults follow RFC 5321 §4.5.3 and REFERENCE.md."""

    hostname: str
    max_message_size: int = 35 * 1024 * 1024
    max_recipients: int = 100  # RFC 5321 §4.5.3.1.8: at least 100 must be accepted
    max_command_line: int = 512  # RFC 5321 §4.5.3.1.4, including CRLF
    # Longest DATA/BDAT line including CRLF; 0 = any length within max_message_size (Postfix
    # is as lenient). RFC 5321 §4.5.3.1.6 asks for 1 000: set that to refuse longer lines.
    max_text_line: int = 0
    max_errors: int = 10  # protocol errors per session before 421 and close
    # Postfix smtpd_soft_error_limit / smtpd_error_sleep_time / smtpd_hard_error_limit: errors
    # here are protocol errors AND permanently refused recipients, so that probing for valid
    # addresses (10 000 unknown recipients answered in 3.3 s on one connection) is slowed
    # after `soft_error_limit` and cut off at `hard_error_limit`.
    soft_error_limit: int = 10
    hard_error_limit: int = 20
    error_delay: float = 1.0  # seconds each error reply past the soft limit is held back
    # Postfix smtpd_junk_command_limit: NOOP, RSET, VRFY, EXPN and HELP past this many since the
    # last accepted message count as errors, so that a client cannot hold a connection slot
    # for ever with a NOOP every few minutes (each one resets the idle timeout).
    junk_command_limit: int = 100
    bare_newline: BareNewlinePolicy = "reject"
    tls_available: bool = False  # advertise STARTTLS
    tls_required: bool = False  # MAIL without TLS gets 530 5.7.0
    smtputf8: bool = True  # RFC 6531

    def __post_init__(self) -> None:
        if not self.hostname or any(c.isspace() or not c.isprintable() for c in self.hostname):
            raise ValueError("hostname must be a non-empty name without spaces or controls")
        for name in (
            "max_message_size",
            "max_recipients",
            "max_command_line",
            "max_errors",
            "soft_error_limit",
            "hard_error_limit",
            "junk_command_limit",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_text_line < 0:
            raise ValueError("max_text_line must be 0 (no limit) or a length in octets")
        if self.error_delay < 0:
            raise ValueError("error_delay must not be negative")
        if self.bare_newline not in ("reject", "normalize"):
            raise ValueError("bare_newline must be 'reject' or 'normalize'")
        if self.tls_required and not self.tls_available:
            raise ValueError("tls_required needs tls_available, or no client could send mail")


@dataclass(frozen=True, slots=True)
class TLSFacts:
    """What the shell learned from the TLS handshake, e.g. ("TLSv1.3", "TLS_AES_256_GCM_SHA384",
    256); kept with every message for Received headers and the email log."""

    version: str
    cipher: str
    bits: int


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Facts about the session, snapshot into every envelope."""

    client_ip: str
    helo: str | None = None
    esmtp: bool = False
    tls: TLSFacts | None = None


@dataclass(frozen=True, slots=True)
class InboundEnvelope:
    """One transaction's envelope (RFC 5321 §2.3.1) and the session it arrived on."""

    mail_from: Path
    rcpt_to: tuple[Path, ...]
    mail_params: Mapping[str, str | None]
    body: Literal["7BIT", "8BITMIME"] | None
    smtputf8: bool
    requiretls: bool
    size: int | None  # declared with SIZE=, if any (RFC 1870)
    session: SessionInfo


# --- Events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RcptRequest:
    """A syntactically valid recipient: answer with accept_rcpt() or reject_rcpt(reply)."""

    mail_from: Path
    recipient: Path
    params: Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class MessageComplete:
    """A complete message: answer with answer_message(reply) once it is durable (or not)."""

    envelope: InboundEnvelope
    content: bytearray = field(repr=False)


@dataclass(frozen=True, slots=True)
class StartTLS:
    """220 is queued; send it, run the handshake, then call tls_established()."""


@dataclass(frozen=True, slots=True)
class Throttle:
    """Past the soft error limit: send the queued replies and read on only after `seconds`.

    The wait is the shell's (an asyncio delay for this session alone, never a blocking sleep);
    the machine only says when and how long.
    """

    seconds: float


Stage = Literal["MAIL", "RCPT", "DATA", "BDAT"]


@dataclass(frozen=True, slots=True)
class EnvelopeRejected:
    """The machine itself refused part of an envelope; for the email log.

    `recipients` are the accepted ones for MAIL/DATA/BDAT, and the refused one (when it could be
    parsed) for RCPT.
    """

    stage: Stage
    reply: Reply
    mail_from: Path | None
    recipients: tuple[Path, ...]
    reason: str  # for people: may quote the client (a parameter name), escape it when logging
    code: RejectReason  # for metrics: a closed set, never client text


@dataclass(frozen=True, slots=True)
class Close:
    """Send what is queued, then close the connection; input is ignored from now on."""

    reason: str


Event = RcptRequest | MessageComplete | StartTLS | EnvelopeRejected | Throttle | Close


class State(enum.Enum):
    """Where the connection is; the waiting states need an answer from the application."""

    GREETING = "greeting"  # before send_greeting()
    COMMAND = "command"  # reading command lines
    RCPT_PENDING = "rcpt_pending"  # waiting for accept_rcpt()/reject_rcpt()
    DATA = "data"  # reading DATA content
    BDAT = "bdat"  # reading a BDAT chunk
    MESSAGE_PENDING = "message_pending"  # waiting for answer_message()
    STARTTLS = "starttls"  # waiting for tls_established()
    CLOSED = "closed"


class Phase(enum.Enum):
    """Where the mail transaction is (RFC 5321 §3.3, RFC 3030 §2): what decides which commands
    may come next. `State` says what input is read; `Phase` what a command line may ask."""

    NO_HELLO = "no_hello"  # before EHLO/HELO (again after STARTTLS: RFC 3207 §4.2)
    IDLE = "idle"  # greeted, no transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    CHUNKING = "chunking"  # BDAT chunks accepted, LAST not yet

    # Members are singletons compared by identity: hash them so, in C. (Enum's own __hash__
    # is Python code, and the accept path looks a phase up on every transition.)
    __hash__ = object.__hash__


# Command sequencing as a table, as h11 does with its transitions: verb × phase → the reply
# refusing the command there. A pair not listed is allowed. EHLO, HELO, RSET, NOOP, QUIT, VRFY,
# EXPN, HELP and STARTTLS are allowed in every phase. The phase changes where a command
# succeeds (`_enter`): EHLO/HELO → IDLE, MAIL → MAIL, an accepted RCPT → RCPT, an accepted
# BDAT chunk → CHUNKING, and every reset (RSET, EHLO, an answered or refused message) → IDLE.
_SEQUENCE: Mapping[str, Mapping[Phase, Reply]] = {
    # RFC 5321 §4.1.4: MAIL needs a greeting and may not nest.
    "MAIL": {
        Phase.NO_HELLO: R.NEED_HELO,
        Phase.MAIL: R.NESTED_MAIL,
        Phase.RCPT: R.NESTED_MAIL,
        Phase.CHUNKING: R.NESTED_MAIL,
    },
    # RFC 5321 §3.3: RCPT needs MAIL; RFC 3030 §2: no RCPT once BDAT has begun.
    "RCPT": {
        Phase.NO_HELLO: R.NEED_MAIL,
        Phase.IDLE: R.NEED_MAIL,
        Phase.CHUNKING: R.RCPT_AFTER_BDAT,
    },
    # RFC 5321 §3.3: 554 when no recipient was accepted (an envelope refusal, not a client
    # error); RFC 3030 §2: DATA may not follow BDAT in one transaction.
    "DATA": {
        Phase.NO_HELLO: R.NEED_MAIL,
        Phase.IDLE: R.NEED_MAIL,
        Phase.MAIL: R.NO_VALID_RECIPIENTS,
        Phase.CHUNKING: R.DATA_AFTER_BDAT,
    },
    # RFC 3030 §2: a refused chunk is still read (its octets follow the command), then
    # answered with this reply.
    "BDAT": {
        Phase.NO_HELLO: R.NEED_MAIL,
        Phase.IDLE: R.NEED_MAIL,
        Phase.MAIL: R.NO_VALID_RECIPIENTS,
    },
}

# The same table by phase, so that each command costs one lookup by verb.
_REFUSALS: Mapping[Phase, Mapping[str, Reply]] = {
    phase: {verb: row[phase] for verb, row in _SEQUENCE.items() if phase in row}
    for phase in Phase
}


# Any C0 control or DEL inside a command line (HT included: RFC 5321 commands use SP only).
# Refused before anything else so no CR, NUL or LF can reach a log line or header.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_SIZE_VALUE = re.compile(r"[0-9]{1,20}")
_BDAT_ARGS = re.compile(r"([0-9]{1,20})(?: +(LAST))? *", re.IGNORECASE)
# Verbs whose argument syntax is checked before their sequencing: "DATA x" is a syntax error
# wherever it comes, and BDAT's octet count must be read to find the chunk's end even when
# the chunk is refused (RFC 3030 §2). The others are refused out of sequence before parsing.
_ARGUMENTS_FIRST = frozenset({"DATA", "BDAT"})


@dataclass(slots=True)
class _Bdat:
    """What BDAT (RFC 3030) keeps between and within chunks, in one place."""

    # The reader being fed: this transaction's (content of every accepted chunk so far), or,
    # while a refused chunk is read, one that drops it.
    reader: ChunkReader | None = None
    octets: int = 0  # size of the chunk being read
    last: bool = False  # the chunk being read is the LAST one
    owed: Reply | None = None  # refusal owed once the dropped chunk is in
    # A refused transfer: every chunk still in flight gets this answer until the LAST one.
    failed: Reply | None = None


class ServerConnection:
    """One SMTP session (RFC 5321) with ESMTP extensions: SIZE, 8BITMIME, PIPELINING,
    ENHANCEDSTATUSCODES, STARTTLS, SMTPUTF8, CHUNKING, REQUIRETLS."""

    def __init__(self, settings: ProtocolSettings, client_ip: str) -> None:
        self.settings = settings
        self._state = State.GREETING
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._rx = bytearray()  # unparsed input in front of _chunks
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._discarding_line = False  # inside an over-long command line
        self._errors = 0  # protocol errors (max_errors)
        self._all_errors = 0  # protocol errors and refused recipients (soft/hard error limits)
        self._junk = 0  # NOOP, RSET, VRFY, EXPN, HELP since the last accepted message
        self._session = SessionInfo(client_ip=client_ip)
        self._pending_rcpt: Path | None = None
        self._data: DataReader | None = None
        self._bdat = _Bdat()
        self._phase = Phase.NO_HELLO
        self._refusals = _REFUSALS[Phase.NO_HELLO]
        self._reset_transaction()

    # --- public API ----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def in_data(self) -> bool:
        """True while message content is being received (for the minimum data-rate check)."""
        return self._state in (State.DATA, State.BDAT)

    @property
    def in_message(self) -> bool:
        """True from DATA's 354 or the first BDAT chunk until the message ends: the span over
        which the shell enforces the minimum data rate (BDAT command lines included, so that a
        client cannot restart the rate clock with every small chunk)."""
        return self._state in (State.DATA, State.BDAT) or (
            self._state is State.COMMAND and self._phase is Phase.CHUNKING
        )

    @property
    def mid_line(self) -> bool:
        """True while part of a command line has arrived but not its end: the shell's command
        deadline then runs from the line's first octet instead of moving with every byte."""
        return self._state is State.COMMAND and (
            bool(self._rx) or bool(self._chunks) or self._discarding_line
        )

    @property
    def session(self) -> SessionInfo:
        return self._session

    @property
    def phase(self) -> Phase:
        """Where the mail transaction is (see `_SEQUENCE` for what each phase allows)."""
        return self._phase

    def send_greeting(self) -> None:
        """Queue the 220 banner; refuse instead if the client already talked (pre-greeting)."""
        if self._state is State.CLOSED:
            return
        if self._state is not State.GREETING:
            raise LocalProtocolError("greeting already sent")
        if self._chunks:
            self._pre_greeting()
            return
        self._reply(R.greeting(self.settings.hostname))
        self._state = State.COMMAND

    def refuse(self, reply: Reply) -> None:
        """Queue `reply` (e.g. 421 too many connections) and close."""
        if self._state is State.CLOSED:
            return
        self._reply(reply)
        self._close(f"refused: {reply}")

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer; b"" means the peer closed its side (EOF)."""
        if self._state is State.CLOSED or self._eof:
            return
        if not data:
            self._eof = True
            return
        if self._state is State.STARTTLS:
            return  # RFC 3207 §4.2 / CVE-2011-0411: plaintext before the handshake is dropped
        self._chunks.append(data if type(data) is bytes else bytes(data))

    def next_event(self) -> Event | None:
        """The next event, or None when more input is needed or an answer is pending."""
        if not self._events:
            self._process()
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        """All reply bytes queued since the last call."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def accept_rcpt(self) -> None:
        """Accept the recipient of the pending RcptRequest: 250 2.1.5."""
        if self._state is State.CLOSED:
            return
        if self._state is not State.RCPT_PENDING or self._pending_rcpt is None:
            raise LocalProtocolError("accept_rcpt() without a pending RcptRequest")
        self._rcpts.append(self._pending_rcpt)
        self._pending_rcpt = None
        self._state = State.COMMAND
        self._enter(Phase.RCPT)
        self._reply(R.RECIPIENT_OK)

    def reject_rcpt(self, reply: Reply) -> None:
        """Refuse the recipient of the pending RcptRequest with a 4xx/5xx reply."""
        if self._state is State.CLOSED:
            return
        if self._state is not State.RCPT_PENDING:
            raise LocalProtocolError("reject_rcpt() without a pending RcptRequest")
        if reply.code < 400:
            raise LocalProtocolError(f"reject_rcpt() needs a 4xx/5xx reply, not {reply.code}")
        self._pending_rcpt = None
        self._state = State.COMMAND
        self._reply(reply)
        if reply.code == 421:
            self._close(f"application answered {reply}")
        elif reply.code >= 500:
            # A temporary refusal (our own state, e.g. the daily case limit) is not the
            # client's error; a permanent one is what probing for addresses produces.
            self._count_error()

    def answer_message(self, reply: Reply) -> None:
        """Answer the pending MessageComplete; the transaction then resets (RFC 5321 §4.1.1.4)."""
        if self._state is State.CLOSED:
            return
        if self._state is not State.MESSAGE_PENDING:
            raise LocalProtocolError("answer_message() without a pending MessageComplete")
        self._reset_transaction()
        self._state = State.COMMAND
        self._reply(reply)
        if reply.code // 100 == 2:
            self._junk = 0  # as Postfix: the count starts again after each delivered message
        if reply.code == 421:
            self._close(f"application answered {reply}")

    def tls_established(self, facts: TLSFacts) -> None:
        """The handshake succeeded: forget the plaintext session (RFC 3207 §4.2)."""
        if self._state is State.CLOSED:
            return
        if self._state is not State.STARTTLS:
            raise LocalProtocolError("tls_established() without a StartTLS event")
        self._rx.clear()
        self._chunks.clear()
        self._discarding_line = False
        self._session = SessionInfo(client_ip=self._session.client_ip, tls=facts)
        self._reset_transaction()  # and back to NO_HELLO: the client must greet again
        self._state = State.COMMAND

    def timeout(self) -> None:
        """The shell's deadline passed: 421 4.4.2 and close."""
        if self._state is State.CLOSED:
            return
        if self._state is State.STARTTLS:
            # Mid-handshake, plaintext would corrupt the TLS stream: just close.
            self._close("timeout during TLS handshake")
            return
        was = self._state
        self._reply(R.TIMEOUT)
        self._close(f"timeout in state {was.value}")

    # --- driving -------------------------------------------------------------------------------

    def _process(self) -> None:
        while not self._events:
            st = self._state
            if st is State.COMMAND:
                line = self._next_line()
                if line is None:
                    if self._eof:
                        self._close("EOF from client")
                    return
                self._handle_line(line)
            elif st is State.DATA:
                if not self._feed_data():
                    return
            elif st is State.BDAT:
                if not self._feed_bdat():
                    return
            elif st is State.GREETING:
                if self._chunks:
                    self._pre_greeting()
                elif self._eof:
                    self._close("EOF before greeting")
                return
            elif st is State.STARTTLS:
                self._rx.clear()
                self._chunks.clear()
                if self._eof:
                    self._close("EOF before TLS handshake")
                return
            else:  # waiting for an answer, or closed
                return

    def _take(self) -> bytes | None:
        """The next unread input, oldest first."""
        if self._rx:
            data = bytes(self._rx)
            self._rx.clear()
            return data
        if self._chunks:
            return self._chunks.popleft()
        return None

    def _unread(self, data: bytes) -> None:
        # Only called right after _take() emptied _rx, so order is kept.
        if data:
            self._rx += data

    def _next_line(self) -> bytes | None:
        """One command line including its LF, or None; over-long lines are skipped and answered
        once they end, without buffering them (RFC 5321 §4.5.3.1.4)."""
        limit = self.settings.max_command_line
        rx = self._rx
        while True:
            i = rx.find(b"\n")
            if i >= 0:
                line = bytes(rx[: i + 1])
                del rx[: i + 1]
                if self._discarding_line or i + 1 > limit:
                    self._discarding_line = False
                    return b""  # marker: over-long line
                return line
            if len(rx) >= limit or self._discarding_line:
                # No LF within the limit: this line is too long whatever follows.
                self._discarding_line = True
                rx.clear()
            if not self._chunks:
                return None
            rx += self._chunks.popleft()

    def _feed_data(self) -> bool:
        reader = self._data
        assert reader is not None
        while True:
            chunk = self._take()
            if chunk is None:
                if self._eof:
                    self._close("EOF during DATA")
                return False
            if reader.feed(chunk):
                break
        res = reader.result
        self._data = None
        self._unread(res.leftover)
        res.leftover = b""
        self._state = State.COMMAND
        self._finish_message("DATA", res)
        return True

    def _feed_bdat(self) -> bool:
        reader = self._bdat.reader
        assert reader is not None
        while not reader.chunk_complete:
            chunk = self._take()
            if chunk is None:
                if self._eof:
                    self._close("EOF during BDAT")
                return False
            self._unread(reader.feed(chunk))
        self._state = State.COMMAND
        self._end_bdat_chunk()
        return True

    # --- replies, errors, closing --------------------------------------------------------------

    def _reply(self, reply: Reply) -> None:
        self._out += reply.to_bytes()

    def _fail(self, reply: Reply) -> None:
        """A protocol error by the client: reply and count (Postfix smtpd_junk_command_limit
        and smtpd_hard_error_limit)."""
        self._reply(reply)
        self._errors += 1
        if self._state is State.CLOSED:
            return
        if self._errors >= self.settings.max_errors:
            self._reply(R.TOO_MANY_ERRORS)
            self._close("too many errors")
            return
        self._count_error()

    def _count_error(self) -> None:
        """One more client error: past the soft limit the replies are held back (Throttle),
        at the hard limit the session ends with 421 4.7.0 (Postfix smtpd_soft_error_limit,
        smtpd_error_sleep_time, smtpd_hard_error_limit)."""
        self._all_errors += 1
        st = self.settings
        if self._all_errors > st.soft_error_limit and st.error_delay > 0:
            self._events.append(Throttle(st.error_delay))
        if self._all_errors >= st.hard_error_limit:
            self._reply(R.TOO_MANY_ERRORS)
            self._close("too many errors")

    def _junk_command(self) -> None:
        """One more command that moves no mail; past `junk_command_limit` it is an error."""
        self._junk += 1
        if self._junk > self.settings.junk_command_limit and self._state is not State.CLOSED:
            self._count_error()

    def _close(self, reason: str) -> None:
        self._state = State.CLOSED
        self._rx.clear()
        self._chunks.clear()
        self._data = None
        self._bdat.reader = None
        self._events.append(Close(reason))

    def _pre_greeting(self) -> None:
        self._reply(R.PRE_GREETING_TRAFFIC)
        self._close("pre-greeting traffic")

    def _envelope_rejected(
        self,
        stage: Stage,
        reply: Reply,
        reason: str,
        code: RejectReason,
        recipients: tuple[Path, ...] | None = None,
    ) -> None:
        self._events.append(
            EnvelopeRejected(
                stage=stage,
                reply=reply,
                mail_from=self._mail_from,
                recipients=tuple(self._rcpts) if recipients is None else recipients,
                reason=reason,
                code=code,
            )
        )

    def _reset_transaction(self) -> None:
        """RFC 5321 §4.1.1.5: forget sender, recipients and content."""
        self._mail_from: Path | None = None
        self._mail_params: dict[str, str | None] = {}
        self._rcpts: list[Path] = []
        self._body: Literal["7BIT", "8BITMIME"] | None = None
        self._smtputf8 = False
        self._requiretls = False
        self._size: int | None = None
        self._data = None
        if self._bdat.reader is not None or self._bdat.failed is not None:
            self._bdat = _Bdat()  # (its other fields are set anew by every BDAT command)
        self._enter(Phase.NO_HELLO if self._session.helo is None else Phase.IDLE)

    def _enter(self, phase: Phase) -> None:
        if phase is not self._phase:
            self._phase = phase
            self._refusals = _REFUSALS[phase]

    # --- commands ------------------------------------------------------------------------------

    def _handle_line(self, raw: bytes) -> None:
        if not raw:
            self._fail(R.command_line_too_long(self.settings.max_command_line))
            return
        if raw.endswith(b"\r\n"):
            body = raw[:-2]
        else:
            body = raw[:-1]
            if self.settings.bare_newline == "reject":
                self._fail(R.BARE_LF_COMMAND)
                return
        verb_b, _, arg_b = body.partition(b" ")
        verb = verb_b.upper().decode("ascii", "replace")
        handler = _COMMANDS.get(verb)
        if handler is None:
            self._fail(R.UNKNOWN_COMMAND)
            return
        if _CONTROL.search(body):
            self._fail(R.CONTROL_CHARACTERS)
            return
        try:
            arg = arg_b.decode("utf-8")
        except UnicodeDecodeError:
            self._fail(R.BAD_UTF8_COMMAND)
            return
        if verb in self._refusals and verb not in _ARGUMENTS_FIRST:
            self._fail(self._refusals[verb])
            return
        handler(self, arg)

    def _pipelined_input(self) -> bool:
        return bool(self._rx) or bool(self._chunks)

    def _hello(self, arg: str, esmtp: bool) -> None:
        # RFC 2920 §3.1: EHLO/HELO must end a command group. A client that does not wait for
        # the reply is not an MTA talking SMTP (Postfix smtpd_forbid_unauth_pipelining).
        if self._pipelined_input():
            self._reply(R.IMPROPER_PIPELINING)
            self._close("improper pipelining after EHLO/HELO")
            return
        name = arg.strip(" ")
        if not name:
            self._fail(R.SYNTAX_EHLO if esmtp else R.SYNTAX_HELO)
            return
        # RFC 5321 §4.1.4: EHLO/HELO also reset any transaction.
        self._reset_transaction()
        s = self._session
        self._session = SessionInfo(s.client_ip, name.split(" ", 1)[0], esmtp, s.tls)
        self._enter(Phase.IDLE)
        if esmtp:
            self._reply(R.ehlo_reply(self.settings.hostname, self._ehlo_keywords()))
        else:
            self._reply(R.helo_reply(self.settings.hostname))

    def _ehlo_keywords(self) -> tuple[str, ...]:
        st = self.settings
        tls = self._session.tls is not None
        kw = [f"SIZE {st.max_message_size}", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES"]
        if st.tls_available and not tls:
            kw.append("STARTTLS")  # RFC 3207 §4.2: not offered again after the handshake
        if st.smtputf8:
            kw.append("SMTPUTF8")
        kw.append("CHUNKING")
        if tls:
            kw.append("REQUIRETLS")  # RFC 8689 §4: only offered over TLS
        return tuple(kw)

    def _cmd_ehlo(self, arg: str) -> None:
        self._hello(arg, esmtp=True)

    def _cmd_helo(self, arg: str) -> None:
        self._hello(arg, esmtp=False)

    def _cmd_mail(self, arg: str) -> None:
        st = self.settings
        if st.tls_required and self._session.tls is None:
            try:
                path: Path | None = parse_mail_from(arg, smtputf8=st.smtputf8)[0]
            except AddressError:
                path = None
            self._events.append(
                EnvelopeRejected(
                    "MAIL", R.MUST_STARTTLS, path, (), "TLS required, not started",
                    RejectReason.TLS_REQUIRED,
                )
            )
            self._fail(R.MUST_STARTTLS)
            return
        try:
            path, params = parse_mail_from(arg, smtputf8=st.smtputf8)
        except AddressError as e:
            self._envelope_rejected(
                "MAIL", e.reply, "bad sender address or parameter syntax",
                RejectReason.BAD_SENDER_SYNTAX,
            )
            self._fail(e.reply)
            return
        body: Literal["7BIT", "8BITMIME"] | None = None
        size: int | None = None
        for key, value in params.items():
            error: Reply | None = None
            if key == "SIZE":  # RFC 1870
                if value is None or not _SIZE_VALUE.fullmatch(value):
                    error = R.BAD_SIZE_PARAMETER
                else:
                    size = int(value)
            elif key == "BODY":  # RFC 6152
                v = (value or "").upper()
                if v == "7BIT":
                    body = "7BIT"
                elif v == "8BITMIME":
                    body = "8BITMIME"
                else:
                    error = R.UNSUPPORTED_BODY
            elif key in ("SMTPUTF8", "REQUIRETLS"):
                if value is not None:
                    error = R.PARAMETER_VALUE_UNEXPECTED
                elif key == "SMTPUTF8" and not st.smtputf8:
                    error = R.SMTPUTF8_DISABLED
                elif key == "REQUIRETLS" and self._session.tls is None:
                    error = R.REQUIRETLS_WITHOUT_TLS
            else:
                error = R.unsupported_parameter(key)
            if error is not None:
                self._events.append(
                    EnvelopeRejected(
                        "MAIL", error, path, (), f"bad MAIL parameter {key}",
                        RejectReason.BAD_MAIL_PARAMETER,
                    )
                )
                self._fail(error)
                return
        if size is not None and size > st.max_message_size:
            # RFC 1870 §6.1: declared size above the fixed maximum.
            self._events.append(
                EnvelopeRejected(
                    "MAIL", R.MESSAGE_TOO_BIG, path, (), f"declared SIZE={size} over the limit",
                    RejectReason.DECLARED_SIZE_TOO_BIG,
                )
            )
            self._reply(R.MESSAGE_TOO_BIG)
            return
        self._mail_from = path
        self._mail_params = params
        self._body = body
        self._size = size
        self._smtputf8 = "SMTPUTF8" in params
        self._requiretls = "REQUIRETLS" in params
        self._enter(Phase.MAIL)
        self._reply(R.SENDER_OK)

    def _cmd_rcpt(self, arg: str) -> None:
        mail_from = self._mail_from
        assert mail_from is not None  # _SEQUENCE: RCPT comes after MAIL
        try:
            path, params = parse_rcpt_to(arg, smtputf8=self._smtputf8)
        except AddressError as e:
            self._envelope_rejected(
                "RCPT", e.reply, "bad recipient address syntax",
                RejectReason.BAD_RECIPIENT_SYNTAX, (),
            )
            self._fail(e.reply)
            return
        if params:
            # No RCPT parameters are advertised (no DSN): RFC 5321 §4.1.1.11.
            key = next(iter(params))
            error = R.unsupported_parameter(key)
            self._envelope_rejected(
                "RCPT", error, f"bad RCPT parameter {key}", RejectReason.BAD_RCPT_PARAMETER,
                (path,),
            )
            self._fail(error)
            return
        if len(self._rcpts) >= self.settings.max_recipients:
            # RFC 5321 §4.5.3.1.10: 452 so that the client sends the rest later.
            self._envelope_rejected(
                "RCPT", R.TOO_MANY_RECIPIENTS, "too many recipients",
                RejectReason.TOO_MANY_RECIPIENTS, (path,),
            )
            self._reply(R.TOO_MANY_RECIPIENTS)
            return
        self._pending_rcpt = path
        self._state = State.RCPT_PENDING
        self._events.append(RcptRequest(mail_from, path, params))

    def _cmd_data(self, arg: str) -> None:
        refusal = self._refusals.get("DATA")
        if arg.strip(" "):
            self._fail(R.SYNTAX_DATA)
        elif refusal is R.NO_VALID_RECIPIENTS:
            self._envelope_rejected(
                "DATA", refusal, "no valid recipients", RejectReason.NO_VALID_RECIPIENTS
            )
            self._reply(refusal)
        elif refusal is not None:
            self._fail(refusal)
        else:
            st = self.settings
            self._data = DataReader(
                max_size=st.max_message_size,
                max_line=st.max_text_line,
                bare_newline=st.bare_newline,
            )
            self._state = State.DATA
            self._reply(R.START_DATA)

    def _cmd_bdat(self, arg: str) -> None:
        m = _BDAT_ARGS.fullmatch(arg)
        if m is None:
            # Without a valid count the chunk's end cannot be found, so anything that follows
            # could be content taken for commands: answer and close.
            self._reply(R.SYNTAX_BDAT)
            self._close("BDAT syntax error")
            return
        octets = int(m.group(1))
        b = self._bdat
        b.octets = octets
        b.last = m.group(2) is not None
        # The rest of a refused BDAT transfer, or out of sequence (_SEQUENCE).
        error = b.failed if b.failed is not None else self._refusals.get("BDAT")
        b.owed = error
        if error is not None:
            # RFC 3030 §2: the announced octets are still read, then dropped.
            b.reader = ChunkReader(max_size=1)
            b.reader.begin(octets, discard=True)
        else:
            if b.reader is None:
                st = self.settings
                b.reader = ChunkReader(
                    max_size=st.max_message_size,
                    max_line=st.max_text_line,
                    bare_newline=st.bare_newline,
                )
            self._enter(Phase.CHUNKING)
            b.reader.begin(octets)
        self._state = State.BDAT

    def _end_bdat_chunk(self) -> None:
        b = self._bdat
        error = b.owed
        if error is not None:
            # The chunk was read only to be dropped; no transaction reader existed.
            b.owed = None
            b.reader = None
            if b.failed is not None:
                if b.last:
                    b.failed = None
                self._reply(error)
            elif error is R.NO_VALID_RECIPIENTS:
                self._envelope_rejected(
                    "BDAT", error, "no valid recipients", RejectReason.NO_VALID_RECIPIENTS
                )
                self._reply(error)
            else:
                self._fail(error)
            return
        reader = b.reader
        assert reader is not None
        if reader.refused or b.last:
            # Refuse as soon as the content cannot be accepted; in-flight chunks are drained.
            self._finish_message("BDAT", reader.finish())
            return
        self._reply(R.chunk_received(b.octets))

    def _finish_message(self, stage: Literal["DATA", "BDAT"], res: DataResult) -> None:
        """End of content: refuse it (and reset) or hand it to the application."""
        refusal = self._content_refusal(res)
        if refusal is not None:
            reply, reason, code = refusal
            self._envelope_rejected(stage, reply, reason, code)
            last = self._bdat.last
            self._reset_transaction()
            if stage == "BDAT" and not last:
                # Chunks already in flight get the same answer until the LAST one.
                self._bdat.failed = reply
            self._reply(reply)
            return
        assert self._mail_from is not None  # content is only read inside a transaction
        envelope = InboundEnvelope(
            mail_from=self._mail_from,
            rcpt_to=tuple(self._rcpts),
            mail_params=dict(self._mail_params),
            body=self._body,
            smtputf8=self._smtputf8,
            requiretls=self._requiretls,
            size=self._size,
            session=self._session,
        )
        self._state = State.MESSAGE_PENDING
        self._events.append(MessageComplete(envelope, res.content))

    def _content_refusal(self, res: DataResult) -> tuple[Reply, str, RejectReason] | None:
        if res.too_big:
            return (
                R.MESSAGE_TOO_BIG, f"message size {res.size} over the limit",
                RejectReason.MESSAGE_TOO_BIG,
            )
        if res.bare_newline_seen and self.settings.bare_newline == "reject":
            return (
                R.BARE_NEWLINE, "bare CR or LF in message content (possible SMTP smuggling)",
                RejectReason.BARE_NEWLINE,
            )
        if res.nul_seen:
            return R.NUL_IN_DATA, "NUL in message content", RejectReason.NUL_IN_DATA
        if res.line_too_long:
            return (
                R.data_line_too_long(self.settings.max_text_line), "message line too long",
                RejectReason.LINE_TOO_LONG,
            )
        return None

    def _cmd_rset(self, arg: str) -> None:
        if arg.strip(" "):
            self._fail(R.SYNTAX_RSET)
            return
        self._reset_transaction()
        self._reply(R.OK)
        self._junk_command()

    def _cmd_noop(self, arg: str) -> None:
        self._reply(R.OK)  # RFC 5321 §4.1.1.9: any argument is ignored
        self._junk_command()

    def _cmd_quit(self, arg: str) -> None:
        self._reply(R.BYE)
        self._close("QUIT")

    def _cmd_vrfy(self, arg: str) -> None:
        if not arg.strip(" "):
            self._fail(R.SYNTAX_VRFY)
            return
        # RFC 5321 §3.5.3: 252 rather than confirming or denying mailboxes.
        self._reply(R.VRFY_CANNOT)
        self._junk_command()

    def _cmd_expn(self, arg: str) -> None:
        self._fail(R.EXPN_NOT_SUPPORTED)
        self._junk_command()

    def _cmd_help(self, arg: str) -> None:
        self._reply(R.HELP)
        self._junk_command()

    def _cmd_starttls(self, arg: str) -> None:
        if arg.strip(" "):
            self._fail(R.SYNTAX_STARTTLS)
        elif not self.settings.tls_available:
            self._fail(R.STARTTLS_NOT_AVAILABLE)
        elif self._session.tls is not None:
            self._fail(R.TLS_ALREADY_ACTIVE)
        else:
            self._reply(R.READY_STARTTLS)
            # CVE-2011-0411, CVE-2024-34083: bytes pipelined after STARTTLS were sent in
            # plaintext and must not be executed inside the TLS session.
            self._rx.clear()
            self._chunks.clear()
            self._discarding_line = False
            self._state = State.STARTTLS
            self._events.append(StartTLS())


# The command handlers, one table for every connection (RFC 5321 §4.1, RFC 3030, RFC 3207).
_COMMANDS: Mapping[str, Callable[[ServerConnection, str], None]] = {
    "EHLO": ServerConnection._cmd_ehlo,
    "HELO": ServerConnection._cmd_helo,
    "MAIL": ServerConnection._cmd_mail,
    "RCPT": ServerConnection._cmd_rcpt,
    "DATA": ServerConnection._cmd_data,
    "BDAT": ServerConnection._cmd_bdat,
    "RSET": ServerConnection._cmd_rset,
    "NOOP": ServerConnection._cmd_noop,
    "QUIT": ServerConnection._cmd_quit,
    "VRFY": ServerConnection._cmd_vrfy,
    "EXPN": ServerConnection._cmd_expn,
    "HELP": ServerConnection._cmd_help,
    "STARTTLS": ServerConnection._cmd_starttls,
}
