"""Golden transcripts: client lines in, exact server replies out (see conftest.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailcase.smtp.replies import UNKNOWN_RECIPIENT, Reply
from mailcase.smtp.server import (
    Close,
    EnvelopeRejected,
    ProtocolSettings,
    RcptRequest,
    StartTLS,
    State,
)

HOST = "mx.test"
PLAIN = ProtocolSettings(HOST)
TLS_OK = ProtocolSettings(HOST, tls_available=True)
TLS_REQUIRED = ProtocolSettings(HOST, tls_available=True, tls_required=True)

EHLO_PLAIN = """
S: 250-mx.test
S: 250-SIZE 36700160
S: 250-8BITMIME
S: 250-PIPELINING
S: 250-ENHANCEDSTATUSCODES
S: 250-SMTPUTF8
S: 250 CHUNKING
"""

EHLO_BEFORE_TLS = """
S: 250-mx.test
S: 250-SIZE 36700160
S: 250-8BITMIME
S: 250-PIPELINING
S: 250-ENHANCEDSTATUSCODES
S: 250-STARTTLS
S: 250-SMTPUTF8
S: 250 CHUNKING
"""

EHLO_AFTER_TLS = """
S: 250-mx.test
S: 250-SIZE 36700160
S: 250-8BITMIME
S: 250-PIPELINING
S: 250-ENHANCEDSTATUSCODES
S: 250-SMTPUTF8
S: 250-CHUNKING
S: 250 REQUIRETLS
"""

GREETING = "S: 220 mx.test ESMTP mailcase\n"


def rejected(t) -> list[EnvelopeRejected]:
    return [e for e in t.events if isinstance(e, EnvelopeRejected)]


# --- greeting, EHLO, HELO ----------------------------------------------------------------------


def test_greeting_and_quit(transcript):
    t = transcript(PLAIN)
    t.run(
        GREETING
        + """
        C: QUIT
        S: 221 2.0.0 Bye
        ! closed
        """
    )
    assert t.events == [Close("QUIT")]
    assert t.conn.state is State.CLOSED


def test_ehlo_lists_extensions_without_tls(transcript):
    transcript(PLAIN).run(GREETING + "C: EHLO client.test\n" + EHLO_PLAIN)


def test_ehlo_offers_starttls_when_available(transcript):
    t = transcript(TLS_OK)
    t.run(GREETING + "C: EHLO client.test\n" + EHLO_BEFORE_TLS)
    assert t.conn.session.helo == "client.test"
    assert t.conn.session.esmtp is True


def test_ehlo_after_tls_drops_starttls_and_offers_requiretls(transcript):
    t = transcript(TLS_OK)
    t.run(
        GREETING
        + "C: EHLO client.test\n"
        + EHLO_BEFORE_TLS
        + """
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        ! tls
        C: EHLO client.test
        """
        + EHLO_AFTER_TLS
    )
    assert t.conn.session.tls is not None
    assert t.conn.session.tls.version == "TLSv1.3"


def test_ehlo_without_smtputf8(transcript):
    transcript(replace(PLAIN, smtputf8=False, max_message_size=1000)).run(
        GREETING
        + """
        C: EHLO client.test
        S: 250-mx.test
        S: 250-SIZE 1000
        S: 250-8BITMIME
        S: 250-PIPELINING
        S: 250-ENHANCEDSTATUSCODES
        S: 250 CHUNKING
        """
    )


def test_helo(transcript):
    t = transcript(PLAIN)
    t.run(
        GREETING
        + """
        C: HELO client.test
        S: 250 mx.test
        C: MAIL FROM:<a@client.test>
        S: 250 2.1.0 Sender OK
        """
    )
    assert t.conn.session.esmtp is False


def test_ehlo_needs_an_argument(transcript):
    transcript(PLAIN).run(
        GREETING
        + """
        C: EHLO
        S: 501 5.5.4 Syntax: EHLO <hostname>
        C: HELO
        S: 501 5.5.4 Syntax: HELO <hostname>
        """
    )


def test_commands_are_case_insensitive(transcript):
    transcript(PLAIN).run(
        GREETING
        + """
        C: helo client.test
        S: 250 mx.test
        C: mail from:<a@client.test>
        S: 250 2.1.0 Sender OK
        C: rcpt to:<b@mx.test>
        S: 250 2.1.5 Recipient OK
        C: rset
        S: 250 2.0.0 OK
        """
    )


# --- the happy path and pipelining ------------------------------------------------------------


def test_mail_rcpt_data_happy_path(transcript):
    t = transcript(PLAIN)
    t.run(
        GREETING
        + "C: EHLO client.test\n"
        + EHLO_PLAIN
        + """
        C: MAIL FROM:<alice@client.test> BODY=8BITMIME SIZE=100
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<bob@mx.test>
        S: 250 2.1.5 Recipient OK
        C: RCPT TO:<carol@mx.test>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: Subject: hello
        C:
        C: ..leading dot
        C: ..
        C: .
        S: 250 2.0.0 OK: queued as Q1
        C: QUIT
        S: 221 2.0.0 Bye
        """
    )
    [msg] = t.messages
    assert bytes(msg.content) == b"Subject: hello\r\n\r\n.leading dot\r\n.\r\n"
    env = msg.envelope
    assert env.mail_from.address == "alice@client.test"
    assert [r.address for r in env.rcpt_to] == ["bob@mx.test", "carol@mx.test"]
    assert env.body == "8BITMIME"
    assert env.size == 100
    assert env.mail_params == {"BODY": "8BITMIME", "SIZE": "100"}
    assert env.smtputf8 is False and env.requiretls is False
    assert env.session.helo == "client.test"
    assert env.session.client_ip == "192.0.2.10"
    assert env.session.tls is None
    rcpt_events = [e for e in t.events if isinstance(e, RcptRequest)]
    assert [e.recipient.address for e in rcpt_events] == ["bob@mx.test", "carol@mx.test"]


def test_empty_message(transcript):
    t = transcript(PLAIN)
    t.run(
        GREETING
        + """
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<Postmaster>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: .
        S: 250 2.0.0 OK: queued as Q1
        """
    )
    [msg] = t.messages
    assert bytes(msg.content) == b""
    assert msg.envelope.mail_from.is_null
    assert msg.envelope.rcpt_to[0].address == "Postmaster"


def test_pipelined_transaction_replies_in_order(transcript):
    # RFC 2920: MAIL, RCPT… and DATA in one group, after the EHLO reply.
    t = transcript(
        PLAIN, rcpt_policy=lambda r: UNKNOWN_RECIPIENT if "nobody" in str(r.recipient) else None
    )
    t.run(
        GREETING
        + "C: EHLO client.test\n"
        + EHLO_PLAIN
        + """
        C: MAIL FROM:<a@client.test>
        C: RCPT TO:<b@mx.test>
        C: RCPT TO:<nobody@mx.test>
        C: RCPT TO:<c@mx.test>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        S: 550 5.1.1 Recipient address rejected: no such mailbox here
        S: 250 2.1.5 Recipient OK
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: hi
        C: .
        C: MAIL FROM:<a@client.test>
        C: RCPT TO:<d@mx.test>
        C: DATA
        S: 250 2.0.0 OK: queued as Q1
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: second
        C: .
        C: QUIT
        S: 250 2.0.0 OK: queued as Q2
        S: 221 2.0.0 Bye
        """
    )
    assert [bytes(m.content) for m in t.messages] == [b"hi\r\n", b"second\r\n"]
    assert [r.address for r in t.messages[0].envelope.rcpt_to] == ["b@mx.test", "c@mx.test"]
    assert [r.address for r in t.messages[1].envelope.rcpt_to] == ["d@mx.test"]


def test_no_output_while_an_answer_is_pending(transcript):
    t = transcript(PLAIN)
    t.conn.send_greeting()
    t.conn.data_to_send()
    t.conn.receive_data(b"HELO c.test\r\n")
    assert t.conn.next_event() is None
    t.conn.receive_data(b"MAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\nNOOP\r\n")
    ev = t.conn.next_event()
    assert isinstance(ev, RcptRequest)
    assert t.conn.state is State.RCPT_PENDING
    assert t.conn.next_event() is None  # waiting for the answer; NOOP not yet answered
    assert t.conn.data_to_send() == b"250 mx.test\r\n250 2.1.0 Sender OK\r\n"
    t.conn.reject_rcpt(Reply(450, "4.2.0", "Try later"))
    assert t.conn.next_event() is None
    assert t.conn.data_to_send() == b"450 4.2.0 Try later\r\n250 2.0.0 OK\r\n"


def test_rset_noop_vrfy_help_expn(transcript):
    transcript(PLAIN).run(
        GREETING
        + """
        C: NOOP
        S: 250 2.0.0 OK
        C: NOOP anything
        S: 250 2.0.0 OK
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<a@c.test>
        S: 250 2.1.0 Sender OK
        C: RSET
        S: 250 2.0.0 OK
        C: RCPT TO:<b@mx.test>
        S: 503 5.5.1 Send MAIL FROM first
        C: MAIL FROM:<a@c.test>
        S: 250 2.1.0 Sender OK
        C: VRFY postmaster
        S: 252 2.1.5 Cannot VRFY user, but will accept message and attempt delivery
        C: VRFY
        S: 501 5.5.4 Syntax: VRFY <address>
        C: EXPN staff
        S: 502 5.5.1 EXPN is not supported
        C: HELP
        S: 214-2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS
        S: 214 2.0.0 See RFC 5321 for the syntax of each command
        C: RSET extra
        S: 501 5.5.4 Syntax: RSET (no arguments)
        """
    )


def test_ehlo_resets_the_transaction(transcript):
    transcript(PLAIN).run(
        GREETING
        + """
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<a@c.test>
        S: 250 2.1.0 Sender OK
        C: HELO c.test
        S: 250 mx.test
        C: RCPT TO:<b@mx.test>
        S: 503 5.5.1 Send MAIL FROM first
        """
    )


# --- sequence and syntax errors ----------------------------------------------------------------


def test_bad_sequences_get_503(transcript):
    transcript(PLAIN).run(
        GREETING
        + """
        C: MAIL FROM:<a@c.test>
        S: 503 5.5.1 Send EHLO or HELO first
        C: HELO c.test
        S: 250 mx.test
        C: RCPT TO:<b@mx.test>
        S: 503 5.5.1 Send MAIL FROM first
        C: DATA
        S: 503 5.5.1 Send MAIL FROM first
        C: MAIL FROM:<a@c.test>
        S: 250 2.1.0 Sender OK
        C: MAIL FROM:<a@c.test>
        S: 503 5.5.1 Sender already given; send RSET to start over
        C: DATA
        S: 554 5.5.1 No valid recipients
        C: DATA now
        S: 501 5.5.4 Syntax: DATA (no arguments)
        """
    )


def test_mail_and_rcpt_syntax_errors(transcript):
    t = transcript(PLAIN)
    t.run(
        GREETING
        + """
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:a@c.test
        S: 501 5.1.7 Bad sender address syntax: use MAIL FROM:<user@example.com>
        C: MAIL TO:<a@c.test>
        S: 501 5.5.4 Syntax: MAIL FROM:<address> [parameters]
        C: MAIL FROM: <a@c.test>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:b@mx.test
        S: 501 5.1.3 Bad recipient address syntax: use RCPT TO:<user@example.com>
        C: RCPT TO:<b@@mx.test>
        S: 501 5.1.3 Bad recipient address syntax
        C: RCPT TO:<b@mx.test> NOTIFY=NEVER
        S: 555 5.5.4 Unsupported parameter NOTIFY; remove it and retry
        """
    )
    stages = [(e.stage, e.reply.code) for e in rejected(t)]
    assert stages == [("MAIL", 501), ("MAIL", 501), ("RCPT", 501), ("RCPT", 501), ("RCPT", 555)]


def test_mail_parameters(transcript):
    transcript(PLAIN).run(
        GREETING
        + """
        C: EHLO c.test
        """
        + EHLO_PLAIN
        + """
        C: MAIL FROM:<a@c.test> SIZE=abc
        S: 501 5.5.4 SIZE must be a decimal number of octets
        C: MAIL FROM:<a@c.test> BODY=BINARYMIME
        S: 555 5.5.4 BODY must be 7BIT or 8BITMIME
        C: MAIL FROM:<a@c.test> AUTH=<>
        S: 555 5.5.4 Unsupported parameter AUTH; remove it and retry
        C: MAIL FROM:<a@c.test> REQUIRETLS
        S: 555 5.5.4 REQUIRETLS is only offered over TLS; issue STARTTLS first
        C: MAIL FROM:<a@c.test> SMTPUTF8=yes
        S: 501 5.5.4 Parameter takes no value
        C: MAIL FROM:<a@c.test> SIZE=1 SIZE=2
        S: 501 5.5.4 Parameter given more than once
        C: MAIL FROM:<a@c.test> body=7bit
        S: 250 2.1.0 Sender OK
        """
    )


def test_smtputf8_transaction(transcript):
    t = transcript(PLAIN)
    t.run(
        GREETING
        + """
        C: EHLO c.test
        """
        + EHLO_PLAIN
        + """
        C: MAIL FROM:<jörg@c.test>
        S: 553 5.6.7 Non-ASCII sender address needs the SMTPUTF8 parameter on MAIL FROM
        C: MAIL FROM:<jörg@c.test> SMTPUTF8
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<用户@例子.test>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: .
        S: 250 2.0.0 OK: queued as Q1
        """
    )
    env = t.messages[0].envelope
    assert env.smtputf8 is True
    assert env.rcpt_to[0].domain == "例子.test"


def test_smtputf8_disabled(transcript):
    transcript(replace(PLAIN, smtputf8=False)).run(
        GREETING
        + """
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<a@c.test> SMTPUTF8
        S: 555 5.5.4 SMTPUTF8 is not supported by this server
        C: MAIL FROM:<jörg@c.test> SMTPUTF8
        S: 553 5.6.7 Non-ASCII sender address needs the SMTPUTF8 parameter on MAIL FROM
        """
    )


def test_unknown_commands_and_error_limit(transcript):
    t = transcript(replace(PLAIN, max_errors=3))
    t.run(
        GREETING
        + """
        C: FOO
        S: 500 5.5.2 Command not recognized; send HELP for the list
        C: GET / HTTP/1.0
        S: 500 5.5.2 Command not recognized; send HELP for the list
        C: MAIL FROM:<a@b.test>
        S: 503 5.5.1 Send EHLO or HELO first
        S: 421 4.7.0 Too many errors, closing connection; try again later
        ! closed
        C: NOOP
        """
    )
    assert t.events[-1] == Close("too many errors")


def test_error_limit_default_is_ten(transcript):
    t = transcript(PLAIN)
    t.conn.send_greeting()
    t.pump()
    out = t.send(b"XYZZY\r\n" * 12)
    lines = out.decode().split("\r\n")[:-1]
    assert lines[:10] == ["500 5.5.2 Command not recognized; send HELP for the list"] * 10
    assert lines[10:] == ["421 4.7.0 Too many errors, closing connection; try again later"]
    assert t.closed


def test_control_characters_and_bad_utf8_in_commands(transcript):
    transcript(PLAIN).run(
        GREETING
        + r"""
        R: b"HELO a\x00b\r\n"
        S: 501 5.5.4 Control characters are not allowed in commands
        R: b"HELO a\rb\r\n"
        S: 501 5.5.4 Control characters are not allowed in commands
        R: b"HELO \xff\xfe\r\n"
        S: 501 5.5.4 Command is not valid UTF-8
        R: b"\r\n"
        S: 500 5.5.2 Command not recognized; send HELP for the list
        """
    )


def test_bare_lf_in_command(transcript):
    transcript(PLAIN).run(
        GREETING
        + r"""
        R: b"NOOP\n"
        S: 500 5.5.2 Bare LF in command line; end commands with CRLF
        """
    )
    transcript(replace(PLAIN, bare_newline="normalize")).run(
        GREETING
        + r"""
        R: b"NOOP\n"
        S: 250 2.0.0 OK
        """
    )


def test_long_command_line_is_refused_without_buffering(transcript):
    t = transcript(PLAIN)
    t.conn.send_greeting()
    t.pump()
    # 511 and 512 octets incl. CRLF are fine; 513 is not (RFC 5321 §4.5.3.1.4: 512 incl. CRLF).
    assert t.send(b"NOOP " + b"x" * 504 + b"\r\n") == b"250 2.0.0 OK\r\n"
    assert t.send(b"NOOP " + b"x" * 505 + b"\r\n") == b"250 2.0.0 OK\r\n"
    assert t.send(b"NOOP " + b"x" * 506 + b"\r\n") == (
        b"500 5.5.2 Line too long; command lines are limited to 512 octets\r\n"
    )
    # A long line arriving in pieces: nothing is answered (nor kept) until it ends.
    for _ in range(100):
        assert t.send(b"A" * 10_000) == b""
        assert len(t.conn._rx) <= 512
    assert t.send(b"tail\r\nNOOP\r\n") == (
        b"500 5.5.2 Line too long; command lines are limited to 512 octets\r\n250 2.0.0 OK\r\n"
    )


# --- limits ------------------------------------------------------------------------------------


def test_declared_size_over_the_limit(transcript):
    t = transcript(replace(PLAIN, max_message_size=1000))
    t.run(
        GREETING
        + """
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<a@c.test> SIZE=1001
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        C: MAIL FROM:<a@c.test> SIZE=1000
        S: 250 2.1.0 Sender OK
        """
    )
    [rej] = rejected(t)
    assert rej.stage == "MAIL" and rej.reply.code == 552
    assert rej.mail_from is not None and rej.mail_from.address == "a@c.test"


def test_message_over_the_limit_is_refused_after_data(transcript):
    t = transcript(replace(PLAIN, max_message_size=20))
    t.run(
        GREETING
        + """
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<a@c.test>
        C: RCPT TO:<b@mx.test>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: 0123456789
        C: 0123456789
        C: .
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        C: RCPT TO:<b@mx.test>
        S: 503 5.5.1 Send MAIL FROM first
        """
    )
    assert t.messages == []
    [rej] = rejected(t)
    assert rej.stage == "DATA" and rej.reply.code == 552
    assert [r.address for r in rej.recipients] == ["b@mx.test"]


def test_too_many_recipients(transcript):
    t = transcript(replace(PLAIN, max_recipients=2))
    t.run(
        GREETING
        + """
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<a@c.test>
        C: RCPT TO:<b1@mx.test>
        C: RCPT TO:<b2@mx.test>
        C: RCPT TO:<b3@mx.test>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        S: 250 2.1.5 Recipient OK
        S: 452 4.5.3 Too many recipients; send the rest in another transaction
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: .
        S: 250 2.0.0 OK: queued as Q1
        """
    )
    assert len(t.messages[0].envelope.rcpt_to) == 2
    [rej] = rejected(t)
    assert rej.stage == "RCPT" and rej.reply.code == 452
    assert [r.address for r in rej.recipients] == ["b3@mx.test"]


def test_line_too_long_in_data(transcript):
    """Only with a configured limit (RFC 5321 §4.5.3.1.6's 1000); see the next test."""
    t = transcript(replace(PLAIN, max_text_line=1000))
    t.run(
        GREETING
        + """
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<a@c.test>
        C: RCPT TO:<b@mx.test>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        """
        + f"C: {'x' * 998}\nC: .{'y' * 998}\nC: .\n"  # 1000 octets each, the 2nd dot-stuffed
        + """
        S: 250 2.0.0 OK: queued as Q1
        C: MAIL FROM:<a@c.test>
        C: RCPT TO:<b@mx.test>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        """
        + f"C: {'x' * 999}\nC: .\n"
        + """
        S: 500 5.5.2 Line too long; message lines are limited to 1000 octets including CRLF
        """
    )
    assert len(t.messages) == 1
    assert rejected(t)[0].stage == "DATA"


def test_long_lines_accepted_by_default_and_stored_as_sent(transcript):
    """Issue 10: Postfix accepts any line length; so does mailcase unless max_text_line is set.
    Bare CR/LF are still refused (test_smtp_smuggling.py)."""
    t = transcript(PLAIN)
    t.run(
        GREETING
        + """
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<a@c.test>
        C: RCPT TO:<b@mx.test>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        """
        + f"C: {'x' * 4000}\nC: ..{'y' * 20000}\nC: .\n"
        + """
        S: 250 2.0.0 OK: queued as Q1
        C: MAIL FROM:<a@c.test>
        C: RCPT TO:<b@mx.test>
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        """
        + f"R: b'BDAT 3002 LAST\\r\\n{'z' * 3000}\\r\\n'\n"
        + """
        S: 250 2.0.0 OK: queued as Q2
        """
    )
    assert bytes(t.messages[0].content) == b"x" * 4000 + b"\r\n." + b"y" * 20000 + b"\r\n"
    assert bytes(t.messages[1].content) == b"z" * 3000 + b"\r\n"


def test_nul_in_data(transcript):
    t = transcript(PLAIN)
    t.run(
        GREETING
        + r"""
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<a@c.test>
        C: RCPT TO:<b@mx.test>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        R: b"a\x00b\r\n.\r\n"
        S: 554 5.6.0 NUL characters are not allowed in message content
        """
    )
    assert t.messages == []


# --- TLS ---------------------------------------------------------------------------------------


def test_tls_required_refuses_mail_before_starttls(transcript):
    t = transcript(TLS_REQUIRED)
    t.run(
        GREETING
        + "C: EHLO c.test\n"
        + EHLO_BEFORE_TLS
        + """
        C: MAIL FROM:<a@c.test>
        S: 530 5.7.0 Must issue a STARTTLS command first
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        ! tls
        C: MAIL FROM:<a@c.test>
        S: 503 5.5.1 Send EHLO or HELO first
        C: EHLO c.test
        """
        + EHLO_AFTER_TLS
        + """
        C: MAIL FROM:<a@c.test> REQUIRETLS
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<b@mx.test>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: .
        S: 250 2.0.0 OK: queued as Q1
        """
    )
    [rej] = rejected(t)
    assert rej.stage == "MAIL" and rej.reply.code == 530
    assert rej.mail_from is not None and rej.mail_from.address == "a@c.test"
    env = t.messages[0].envelope
    assert env.requiretls is True
    assert env.session.tls is not None and env.session.tls.cipher == "TLS_AES_256_GCM_SHA384"


def test_starttls_errors(transcript):
    transcript(PLAIN).run(
        GREETING
        + """
        C: STARTTLS
        S: 502 5.5.1 STARTTLS is not available on this server
        """
    )
    transcript(TLS_OK).run(
        GREETING
        + """
        C: EHLO c.test
        """
        + EHLO_BEFORE_TLS
        + """
        C: STARTTLS now
        S: 501 5.5.4 Syntax: STARTTLS (no arguments)
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        ! tls
        C: STARTTLS
        S: 503 5.5.1 TLS is already active; send EHLO
        """
    )


def test_starttls_injection_is_discarded(transcript):
    # CVE-2011-0411 / CVE-2024-34083: commands pipelined after STARTTLS in plaintext must never
    # be executed inside the TLS session.
    t = transcript(TLS_OK)
    t.run(
        GREETING
        + "C: EHLO c.test\n"
        + EHLO_BEFORE_TLS
        + """
        C: STARTTLS
        C: RSET
        S: 220 2.0.0 Ready to start TLS
        C: MAIL FROM:<injected@evil.test>
        ! tls
        C: NOOP
        S: 250 2.0.0 OK
        """
    )
    assert [e for e in t.events if isinstance(e, StartTLS)] == [StartTLS()]
    assert t.conn.session.helo is None


def test_starttls_resets_session_and_transaction(transcript):
    t = transcript(TLS_OK)
    t.run(
        GREETING
        + "C: EHLO c.test\n"
        + EHLO_BEFORE_TLS
        + """
        C: MAIL FROM:<a@c.test>
        S: 250 2.1.0 Sender OK
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        ! tls
        C: EHLO c.test
        """
        + EHLO_AFTER_TLS
        + """
        C: RCPT TO:<b@mx.test>
        S: 503 5.5.1 Send MAIL FROM first
        """
    )


def test_requiretls_not_accepted_before_tls(transcript):
    transcript(TLS_OK).run(
        GREETING
        + "C: EHLO c.test\n"
        + EHLO_BEFORE_TLS
        + """
        C: MAIL FROM:<a@c.test> REQUIRETLS
        S: 555 5.5.4 REQUIRETLS is only offered over TLS; issue STARTTLS first
        """
    )


# --- greeting and pipelining abuse --------------------------------------------------------------


def test_pre_greeting_traffic(transcript):
    t = transcript(PLAIN, greet=False)
    t.run(
        """
        C: EHLO impatient.test
        S: 554 5.5.0 Protocol error: wait for the 220 greeting before sending commands
        ! closed
        """
    )
    assert t.events == [Close("pre-greeting traffic")]


def test_pre_greeting_traffic_detected_by_send_greeting(transcript):
    t = transcript(PLAIN, greet=False)
    t.conn.receive_data(b"EHLO impatient.test\r\n")
    t.conn.send_greeting()
    assert t.pump() == (
        b"554 5.5.0 Protocol error: wait for the 220 greeting before sending commands\r\n"
    )
    assert t.closed


def test_improper_pipelining_after_ehlo(transcript):
    t = transcript(PLAIN)
    t.run(
        GREETING
        + """
        C: EHLO spammer.test
        C: MAIL FROM:<a@spammer.test>
        C: RCPT TO:<b@mx.test>
        S: 554 5.5.0 Improper command pipelining: wait for the reply to EHLO/HELO (RFC 2920)
        ! closed
        """
    )
    assert not any(isinstance(e, RcptRequest) for e in t.events)


def test_improper_pipelining_after_helo(transcript):
    t = transcript(PLAIN)
    t.run(
        GREETING
        + """
        C: HELO spammer.test
        C: QUIT
        S: 554 5.5.0 Improper command pipelining: wait for the reply to EHLO/HELO (RFC 2920)
        ! closed
        """
    )


def test_refuse_and_timeout(transcript):
    from mailcase.smtp.replies import SERVICE_NOT_AVAILABLE_CONNECTIONS

    t = transcript(PLAIN, greet=False)
    t.conn.refuse(SERVICE_NOT_AVAILABLE_CONNECTIONS)
    assert t.pump() == b"421 4.7.0 Too many connections, try again later\r\n"
    assert t.closed
    t = transcript(PLAIN)
    t.run(
        GREETING
        + """
        C: HELO c.test
        S: 250 mx.test
        ! timeout
        S: 421 4.4.2 Timeout waiting for input, closing connection; try again later
        ! closed
        C: NOOP
        """
    )


# --- EOF ---------------------------------------------------------------------------------------


def test_eof_mid_session(transcript):
    t = transcript(PLAIN)
    t.run(
        GREETING
        + """
        C: HELO c.test
        S: 250 mx.test
        R: b"MAIL FROM:<a@c"
        ! eof
        ! closed
        """
    )
    assert t.events[-1] == Close("EOF from client")


def test_eof_mid_data(transcript):
    t = transcript(PLAIN)
    t.run(
        GREETING
        + """
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<a@c.test>
        C: RCPT TO:<b@mx.test>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: half a message
        ! eof
        ! closed
        """
    )
    assert t.messages == []
    assert t.events[-1] == Close("EOF during DATA")


def test_eof_after_final_dot_still_gets_the_message(transcript):
    t = transcript(PLAIN)
    t.run(
        GREETING
        + """
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<a@c.test>
        C: RCPT TO:<b@mx.test>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: body
        C: .
        C: QUIT
        ! eof
        S: 250 2.0.0 OK: queued as Q1
        S: 221 2.0.0 Bye
        ! closed
        """
    )
    assert len(t.messages) == 1


# --- BDAT (RFC 3030) ---------------------------------------------------------------------------


BDAT_START = (
    GREETING
    + "C: EHLO c.test\n"
    + EHLO_PLAIN
    + """
    C: MAIL FROM:<a@c.test>
    C: RCPT TO:<b@mx.test>
    S: 250 2.1.0 Sender OK
    S: 250 2.1.5 Recipient OK
    """
)


def test_bdat_chunks(transcript):
    t = transcript(PLAIN)
    t.run(
        BDAT_START
        + r"""
        R: b"BDAT 12\r\nSubject: x\r\n"
        S: 250 2.0.0 12 octets received
        R: b"BDAT 8 LAST\r\n.a\r\nb\r\nc"
        S: 250 2.0.0 OK: queued as Q1
        C: QUIT
        S: 221 2.0.0 Bye
        """
    )
    # No dot-unstuffing in BDAT; the content is exactly the octets sent.
    assert bytes(t.messages[0].content) == b"Subject: x\r\n.a\r\nb\r\nc"


def test_bdat_chunk_split_across_receive_calls(transcript):
    t = transcript(PLAIN)
    t.run(BDAT_START + r'R: b"BDAT 12 LAST\r\nhel"')  # and no reply yet
    assert t.conn.in_data
    assert t.send(b"lo\r") == b""
    assert t.send(b"\nwor") == b""
    assert t.send(b"ldNOOP\r\n") == b"250 2.0.0 OK: queued as Q1\r\n250 2.0.0 OK\r\n"
    assert bytes(t.messages[0].content) == b"hello\r\nworld"
    assert not t.conn.in_data


def test_bdat_zero_last(transcript):
    t = transcript(PLAIN)
    t.run(
        BDAT_START
        + r"""
        R: b"BDAT 5\r\nabc\r\nBDAT 0 LAST\r\n"
        S: 250 2.0.0 5 octets received
        S: 250 2.0.0 OK: queued as Q1
        """
    )
    assert bytes(t.messages[0].content) == b"abc\r\n"


def test_bdat_errors_still_consume_the_chunk(transcript):
    t = transcript(PLAIN)
    t.run(
        GREETING
        + r"""
        C: HELO c.test
        S: 250 mx.test
        R: b"BDAT 6 LAST\r\nQUIT\r\n"
        S: 503 5.5.1 Send MAIL FROM first
        C: MAIL FROM:<a@c.test>
        S: 250 2.1.0 Sender OK
        R: b"BDAT 6\r\nQUIT\r\n"
        S: 554 5.5.1 No valid recipients
        C: NOOP
        S: 250 2.0.0 OK
        """
    )
    assert not t.closed


def test_data_after_bdat_is_refused(transcript):
    transcript(PLAIN).run(
        BDAT_START
        + r"""
        R: b"BDAT 3\r\nabc"
        S: 250 2.0.0 3 octets received
        C: DATA
        S: 503 5.5.1 DATA cannot follow BDAT in one transaction; send RSET
        C: RCPT TO:<c@mx.test>
        S: 503 5.5.1 RCPT cannot follow BDAT in one transaction; send RSET
        R: b"BDAT 0 LAST\r\n"
        S: 250 2.0.0 OK: queued as Q1
        """
    )


def test_bdat_bad_size_closes(transcript):
    t = transcript(PLAIN)
    t.run(
        BDAT_START
        + """
        C: BDAT lots
        S: 501 5.5.4 Syntax: BDAT <octets> [LAST]
        ! closed
        """
    )


def test_bdat_too_big_and_in_flight_chunks(transcript):
    t = transcript(replace(PLAIN, max_message_size=10))
    t.run(
        GREETING
        + r"""
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<a@c.test>
        C: RCPT TO:<b@mx.test>
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        R: b"BDAT 8\r\n12345678BDAT 8\r\n12345678BDAT 8\r\n12345678BDAT 2 LAST\r\nxyNOOP\r\n"
        S: 250 2.0.0 8 octets received
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        S: 250 2.0.0 OK
        R: b"BDAT 1 LAST\r\nx"
        S: 503 5.5.1 Send MAIL FROM first
        """
    )
    assert t.messages == []
    [rej] = rejected(t)
    assert rej.stage == "BDAT" and rej.reply.code == 552


def test_bdat_bare_lf_rejected_across_chunks(transcript):
    t = transcript(PLAIN)
    t.run(
        BDAT_START
        + r"""
        R: b"BDAT 2\r\na\r"
        S: 250 2.0.0 2 octets received
        R: b"BDAT 2 LAST\r\n\n\n"
        S: 554 5.5.2 Bare CR or LF not allowed (SMTP smuggling protection); send CRLF line endings
        """
    )
    assert t.messages == []
    t = transcript(PLAIN)
    t.run(
        BDAT_START
        + r"""
        R: b"BDAT 2\r\na\r"
        S: 250 2.0.0 2 octets received
        R: b"BDAT 1 LAST\r\n\n"
        S: 250 2.0.0 OK: queued as Q1
        """
    )
    assert bytes(t.messages[0].content) == b"a\r\n"


# --- the application's answers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "line"),
    [
        (Reply(451, "4.3.0", "Temporary storage failure, please retry later"), "451 4.3.0"),
        (Reply(554, "5.7.1", "Message refused"), "554 5.7.1"),
    ],
)
def test_answer_message_failures_reset_transaction(transcript, answer, line):
    t = transcript(PLAIN, message_reply=lambda m: answer)
    t.run(
        GREETING
        + f"""
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<a@c.test>
        C: RCPT TO:<b@mx.test>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 Recipient OK
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: x
        C: .
        S: {line} {answer.text}
        C: RCPT TO:<b@mx.test>
        S: 503 5.5.1 Send MAIL FROM first
        """
    )


def test_421_from_the_application_closes(transcript):
    t = transcript(PLAIN, rcpt_policy=lambda r: Reply(421, "4.3.2", "Shutting down"))
    t.run(
        GREETING
        + """
        C: HELO c.test
        S: 250 mx.test
        C: MAIL FROM:<a@c.test>
        C: RCPT TO:<b@mx.test>
        C: NOOP
        S: 250 2.1.0 Sender OK
        S: 421 4.3.2 Shutting down
        ! closed
        """
    )
