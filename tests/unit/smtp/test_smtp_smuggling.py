"""SMTP smuggling: only <CRLF>.<CRLF> ends DATA (CVE-2023-51764/51765/51766, CVE-2024-27305).

Each fake ending is followed by a smuggled second transaction. Whatever the policy, there may
be at most one message, its envelope is the real one, and the smuggled MAIL is never executed.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailcase.smtp.replies import queued
from mailcase.smtp.server import (
    EnvelopeRejected,
    MessageComplete,
    ProtocolSettings,
    RcptRequest,
    ServerConnection,
)

FAKE_ENDINGS = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r.\n",
    b"\r\n.\n",
    b"\n.\r",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
]

SMUGGLED = (
    b"MAIL FROM:<admin@evil.test>\r\n"
    b"RCPT TO:<victim@mx.test>\r\n"
    b"DATA\r\n"
    b"From: admin@bank.test\r\n"
    b"\r\n"
    b"smuggled\r\n"
)

POLICIES = ["reject", "normalize"]


def run_session(policy: str, data: bytes, split: int | None = None) -> tuple[list, bytes]:
    settings = ProtocolSettings("mx.test", bare_newline=policy)  # type: ignore[arg-type]
    conn = ServerConnection(settings, client_ip="192.0.2.66")
    conn.send_greeting()
    stream = (
        b"EHLO evil.test\r\n",
        b"MAIL FROM:<user@evil.test>\r\nRCPT TO:<user@mx.test>\r\nDATA\r\n",
        data,
        b"QUIT\r\n",
    )
    events: list = []
    out = bytearray()

    def pump() -> None:
        while (ev := conn.next_event()) is not None:
            events.append(ev)
            if isinstance(ev, RcptRequest):
                conn.accept_rcpt()
            elif isinstance(ev, MessageComplete):
                conn.answer_message(queued("Q1"))
        out.extend(conn.data_to_send())

    for part in stream:
        if split is None:
            conn.receive_data(part)
            pump()
        else:
            for i in range(0, len(part), split):
                conn.receive_data(part[i : i + split])
                pump()
    return events, bytes(out)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("ending", FAKE_ENDINGS, ids=repr)
@pytest.mark.parametrize("split", [None, 1, 3])
def test_fake_ending_never_ends_data(policy, ending, split):
    data = b"Subject: hi\r\n\r\nbody" + ending + SMUGGLED + b"\r\n.\r\n"
    events, out = run_session(policy, data, split)
    messages = [e for e in events if isinstance(e, MessageComplete)]
    rcpts = [e for e in events if isinstance(e, RcptRequest)]
    # The smuggled MAIL/RCPT was never executed as a command.
    assert [r.recipient.address for r in rcpts] == ["user@mx.test"]
    assert b"admin@evil.test" not in b"".join(
        str(e).encode() for e in events if not isinstance(e, MessageComplete)
    )
    assert out.count(b"354 ") == 1
    assert out.endswith(b"221 2.0.0 Bye\r\n")
    nul = b"\x00" in ending
    if policy == "reject" or nul:
        # Refused at the end of DATA: no message at all.
        assert messages == []
        [rej] = [e for e in events if isinstance(e, EnvelopeRejected)]
        assert rej.stage == "DATA"
        assert rej.reply.code == 554
        assert rej.reply.enhanced == ("5.6.0" if nul else "5.5.2")
    else:
        # normalize: one message; the smuggled text is inside it, with CRLF line endings only.
        [msg] = messages
        content = bytes(msg.content)
        assert b"MAIL FROM:<admin@evil.test>" in content
        assert content.count(b"\n") == content.count(b"\r\n")
        assert content.count(b"\r") == content.count(b"\r\n")
        assert [r.address for r in msg.envelope.rcpt_to] == ["user@mx.test"]


@pytest.mark.parametrize("policy", POLICIES)
def test_real_ending_after_a_fake_one(policy):
    # After a refused message the session goes on normally: the next transaction works.
    events, out = run_session(policy, b"x\n.\ny\r\n.\r\n")
    lines = out.split(b"\r\n")
    if policy == "reject":
        assert any(line.startswith(b"554 5.5.2 Bare CR or LF") for line in lines)
    else:
        [msg] = [e for e in events if isinstance(e, MessageComplete)]
        assert bytes(msg.content) == b"x\r\n.\r\ny\r\n"


def test_bare_lf_message_under_normalize_is_repaired():
    events, _ = run_session("normalize", b"a\nb\rc\r\n..d\r\n.\r\n")
    [msg] = [e for e in events if isinstance(e, MessageComplete)]
    assert bytes(msg.content) == b"a\r\nb\r\nc\r\n.d\r\n"


def test_normalize_is_not_the_default():
    assert ProtocolSettings("mx.test").bare_newline == "reject"
    assert replace(ProtocolSettings("mx.test"), bare_newline="normalize").bare_newline == "normalize"
