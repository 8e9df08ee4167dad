"""Golden-transcript helper for the SMTP state machine.

A transcript is readable text::

    C: EHLO client.test          client line (CRLF added); consecutive C:/R: lines go out
    C: MAIL FROM:<a@b.test>      in ONE receive_data call, i.e. pipelined
    R: b"raw\\r\\nbytes"          raw bytes, as a Python literal, sent as they are
    S: 250-mx.test               exact reply line the server must have sent by now
    ! tls                        call tls_established(); also: ! eof, ! timeout, ! greet,
                                 ! closed (assert a Close event was seen)

After each group of client lines every event is handled the way a simple application would
(RcptRequest: accept unless the test rejects the address; MessageComplete: 250 queued as Qn),
and the server's output since the previous check must equal the S: lines that follow.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

import pytest

from mailcase.smtp.replies import Reply, queued
from mailcase.smtp.server import (
    Close,
    Event,
    MessageComplete,
    ProtocolSettings,
    RcptRequest,
    ServerConnection,
    StartTLS,
    TLSFacts,
)

HOST = "mx.test"
TLS = TLSFacts("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256)


class Transcript:
    def __init__(
        self,
        settings: ProtocolSettings | None = None,
        *,
        greet: bool = True,
        rcpt_policy: Callable[[RcptRequest], Reply | None] | None = None,
        message_reply: Callable[[MessageComplete], Reply] | None = None,
    ) -> None:
        self.settings = settings or ProtocolSettings(HOST)
        self.conn = ServerConnection(self.settings, client_ip="192.0.2.10")
        self.rcpt_policy = rcpt_policy or (lambda req: None)
        self.message_reply = message_reply or (lambda msg: queued(f"Q{len(self.messages)}"))
        self.events: list[Event] = []
        self.messages: list[MessageComplete] = []
        self._greet = greet

    @property
    def closed(self) -> bool:
        return any(isinstance(e, Close) for e in self.events)

    def pump(self) -> bytes:
        """Handle every available event; return the bytes the server queued."""
        while (ev := self.conn.next_event()) is not None:
            self.events.append(ev)
            if isinstance(ev, RcptRequest):
                answer = self.rcpt_policy(ev)
                if answer is None:
                    self.conn.accept_rcpt()
                else:
                    self.conn.reject_rcpt(answer)
            elif isinstance(ev, MessageComplete):
                self.messages.append(ev)
                self.conn.answer_message(self.message_reply(ev))
        return self.conn.data_to_send()

    def send(self, data: bytes) -> bytes:
        self.conn.receive_data(data)
        return self.pump()

    def run(self, script: str) -> None:
        if self._greet:
            self.conn.send_greeting()
            self._greet = False
        pending = bytearray()
        expected: list[str] = []
        got = bytearray()

        def flush_client() -> None:
            if pending:
                got.extend(self.send(bytes(pending)))
                pending.clear()

        def check() -> None:
            got.extend(self.pump())
            actual = got.decode("utf-8").split("\r\n")
            assert actual[-1] == "", f"reply not terminated by CRLF: {actual!r}"
            assert actual[:-1] == expected, (
                "server replies differ\n  expected: "
                + "\n            ".join(expected)
                + "\n  actual:   "
                + "\n            ".join(actual[:-1])
            )
            expected.clear()
            got.clear()

        for raw_line in script.strip("\n").splitlines():
            line = raw_line.strip()
            if not line or line.startswith("#"):
                continue
            tag, _, rest = line.partition(" ")
            if tag in ("C:", "R:"):
                if expected:
                    check()
                if tag == "C:":
                    pending += rest.encode("utf-8") + b"\r\n"
                else:
                    value = ast.literal_eval(rest)
                    assert isinstance(value, bytes)
                    pending += value
            elif tag == "S:":
                flush_client()
                expected.append(rest)
            elif tag == "!":
                flush_client()
                if expected:
                    check()
                got.extend(self._directive(rest))
            else:
                raise ValueError(f"bad transcript line: {raw_line!r}")
        flush_client()
        check()

    def _directive(self, what: str) -> bytes:
        if what == "tls":
            assert isinstance(self.events[-1], StartTLS), "tls only right after StartTLS"
            self.conn.tls_established(TLS)
        elif what == "eof":
            self.conn.receive_data(b"")
        elif what == "timeout":
            self.conn.timeout()
        elif what == "greet":
            self.conn.send_greeting()
        elif what == "closed":
            self.pump()
            assert self.closed, f"expected a Close event, got {self.events!r}"
            return b""
        else:
            raise ValueError(f"unknown directive {what!r}")
        return self.pump()


@pytest.fixture
def transcript() -> Callable[..., Transcript]:
    """Factory: transcript(settings=None, **options) -> Transcript."""
    return Transcript
