"""The sequencing table (`_SEQUENCE`, verb × Phase) is what the connection does: every refusal
it lists is the reply sent in that phase, every pair it does not list is not refused for
sequence, and the phase moves as the table's comment says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mailcase.smtp import replies as R
from mailcase.smtp.server import _COMMANDS, _SEQUENCE, Phase, ProtocolSettings, TLSFacts

TLS = TLSFacts("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256)
Factory = Callable[..., Any]  # the `transcript` fixture of conftest.py

# Client lines that take a fresh, greeted connection into each phase.
REACH: dict[Phase, list[bytes]] = {
    Phase.NO_HELLO: [],
    Phase.IDLE: [b"EHLO c.test\r\n"],
    Phase.MAIL: [b"EHLO c.test\r\n", b"MAIL FROM:<a@c.test>\r\n"],
    Phase.RCPT: [b"EHLO c.test\r\n", b"MAIL FROM:<a@c.test>\r\n", b"RCPT TO:<b@mx.test>\r\n"],
    Phase.CHUNKING: [
        b"EHLO c.test\r\n", b"MAIL FROM:<a@c.test>\r\n", b"RCPT TO:<b@mx.test>\r\n",
        b"BDAT 3\r\nabc",
    ],
}

# A well-formed line per sequenced verb (BDAT's octets follow it).
LINES = {
    "MAIL": b"MAIL FROM:<x@c.test>\r\n",
    "RCPT": b"RCPT TO:<y@mx.test>\r\n",
    "DATA": b"DATA\r\n",
    "BDAT": b"BDAT 2 LAST\r\nxy",
}


def _in(transcript: Factory, phase: Phase) -> Any:
    t = transcript()
    t.conn.send_greeting()
    t.conn.data_to_send()
    for line in REACH[phase]:
        t.send(line)
    assert t.conn.phase is phase
    return t


def test_the_table_names_only_known_verbs() -> None:
    assert set(_SEQUENCE) <= set(_COMMANDS)


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("verb", sorted(LINES))
def test_each_pair_answers_as_the_table_says(
    transcript: Factory, verb: str, phase: Phase
) -> None:
    out = _in(transcript, phase).send(LINES[verb])
    refusal = _SEQUENCE[verb].get(phase)
    if refusal is not None:
        assert out == refusal.to_bytes()
    else:
        assert not out.startswith(b"503"), out  # whatever else it says, not out of sequence


def test_the_phase_follows_the_transaction(transcript: Factory) -> None:
    t = _in(transcript, Phase.RCPT)
    t.send(b"RSET\r\n")
    assert t.conn.phase is Phase.IDLE
    t = _in(transcript, Phase.CHUNKING)
    t.send(b"BDAT 1 LAST\r\nz")  # the message is answered: a new transaction may begin
    assert len(t.messages) == 1 and t.conn.phase is Phase.IDLE
    t = _in(transcript, Phase.MAIL)
    t.send(b"DATA\r\n")  # 554, no recipient: the sender stays
    assert t.conn.phase is Phase.MAIL


def test_starttls_needs_a_new_greeting(transcript: Factory) -> None:
    t = transcript(ProtocolSettings("mx.test", tls_available=True))
    t.conn.send_greeting()
    t.send(b"EHLO c.test\r\n")
    t.send(b"STARTTLS\r\n")
    t.conn.tls_established(TLS)
    assert t.conn.phase is Phase.NO_HELLO
    assert t.send(b"MAIL FROM:<a@c.test>\r\n") == R.NEED_HELO.to_bytes()
