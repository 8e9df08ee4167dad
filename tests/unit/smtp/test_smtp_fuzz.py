"""No input from the peer can raise out of the state machine or break its output framing."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcase.smtp.replies import Reply, queued
from mailcase.smtp.server import (
    Close,
    MessageComplete,
    ProtocolSettings,
    RcptRequest,
    ServerConnection,
    StartTLS,
    State,
    TLSFacts,
)

REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][^\r\n]*")

COMMANDS = [
    b"EHLO c.test\r\n",
    b"HELO c.test\r\n",
    b"MAIL FROM:<a@c.test>\r\n",
    b"MAIL FROM:<> SIZE=10 BODY=8BITMIME\r\n",
    b"MAIL FROM:<a@c.test> SMTPUTF8 REQUIRETLS\r\n",
    b"RCPT TO:<b@mx.test>\r\n",
    b"RCPT TO:<Postmaster>\r\n",
    b"DATA\r\n",
    b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT x\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"STARTTLS\r\n",
    b"VRFY x\r\n",
    b"HELP\r\n",
    b".\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r.\r",
    b"..\r\n",
    b"\x00",
    b"\r",
    b"\n",
    b"x" * 600,
]

chunk = st.one_of(
    st.sampled_from(COMMANDS),
    st.binary(max_size=40),
    st.lists(st.sampled_from(COMMANDS), min_size=1, max_size=4).map(b"".join),
)

actions = st.lists(
    st.one_of(
        chunk.map(lambda c: ("data", c)),
        st.sampled_from([("eof", b""), ("timeout", b""), ("pump", b"")]),
    ),
    max_size=25,
)

protocol_settings = st.builds(
    ProtocolSettings,
    hostname=st.just("mx.test"),
    max_message_size=st.integers(min_value=1, max_value=64),
    max_recipients=st.integers(min_value=1, max_value=3),
    max_command_line=st.integers(min_value=16, max_value=512),
    max_text_line=st.one_of(st.just(0), st.integers(min_value=3, max_value=50)),
    max_errors=st.integers(min_value=1, max_value=12),
    soft_error_limit=st.integers(min_value=1, max_value=12),
    hard_error_limit=st.integers(min_value=1, max_value=12),
    bare_newline=st.sampled_from(["reject", "normalize"]),
    tls_available=st.just(True),
    tls_required=st.booleans(),
    smtputf8=st.booleans(),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cfg=protocol_settings,
    greet_first=st.booleans(),
    script=actions,
    answers=st.lists(st.booleans(), min_size=1, max_size=8),
)
def test_random_sessions_never_raise(cfg, greet_first, script, answers):
    conn = ServerConnection(cfg, client_ip="198.51.100.7")
    if greet_first:
        conn.send_greeting()
    out = bytearray()
    closes = 0
    n = 0

    def pump() -> None:
        nonlocal closes, n
        while (ev := conn.next_event()) is not None:
            n += 1
            yes = answers[n % len(answers)]
            if isinstance(ev, RcptRequest):
                if yes:
                    conn.accept_rcpt()
                else:
                    conn.reject_rcpt(Reply(550, "5.1.1", "No"))
            elif isinstance(ev, MessageComplete):
                assert isinstance(ev.content, bytearray)
                assert len(ev.content) <= cfg.max_message_size
                conn.answer_message(queued("Q") if yes else Reply(451, "4.3.0", "Later"))
            elif isinstance(ev, StartTLS):
                assert conn.state is State.STARTTLS
                if yes:
                    conn.tls_established(TLSFacts("TLSv1.3", "X", 256))
            elif isinstance(ev, Close):
                closes += 1
                assert conn.state is State.CLOSED
        out.extend(conn.data_to_send())

    for kind, data in script:
        if kind == "data":
            conn.receive_data(data)
        elif kind == "eof":
            conn.receive_data(b"")
        elif kind == "timeout":
            conn.timeout()
        pump()
        if not greet_first and conn.state is State.GREETING:
            conn.send_greeting()
            pump()
    conn.receive_data(b"")
    pump()

    assert closes <= 1
    if closes:
        assert conn.state is State.CLOSED
        conn.receive_data(b"NOOP\r\n")
        assert conn.next_event() is None
        assert conn.data_to_send() == b""
    # Output is always whole reply lines.
    if out:
        assert out.endswith(b"\r\n")
        for line in bytes(out).split(b"\r\n")[:-1]:
            assert REPLY_LINE.fullmatch(line), line
            assert len(line) + 2 <= 512  # RFC 5321 §4.5.3.1.5: reply lines ≤ 512 octets


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=64))
def test_random_bytes_in_any_chunking(data, step):
    for policy in ("reject", "normalize"):
        conn = ServerConnection(
            ProtocolSettings("mx.test", bare_newline=policy, tls_available=True),
            client_ip="198.51.100.7",
        )
        conn.send_greeting()
        for i in range(0, len(data), step):
            conn.receive_data(data[i : i + step])
            while (ev := conn.next_event()) is not None:
                if isinstance(ev, RcptRequest):
                    conn.accept_rcpt()
                elif isinstance(ev, MessageComplete):
                    conn.answer_message(queued("Q"))
                elif isinstance(ev, StartTLS):
                    conn.tls_established(TLSFacts("TLSv1.3", "X", 256))
            conn.data_to_send()
        conn.receive_data(b"")
        while conn.next_event() is not None:
            pass
        assert conn.state is State.CLOSED
