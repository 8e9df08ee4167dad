"""Soft and hard error limits (issue 11 item 7): refused recipients count as errors, so probing
for addresses is slowed (Throttle) past the soft limit and cut off at the hard limit."""

from __future__ import annotations

from mailcase.smtp.replies import UNKNOWN_RECIPIENT, Reply
from mailcase.smtp.server import Close, ProtocolSettings, RcptRequest, State, Throttle

LIMITS = ProtocolSettings("mx.test", soft_error_limit=2, hard_error_limit=4, error_delay=0.5)
GREETING = "S: 220 mx.test ESMTP mailcase\n"
UNKNOWN = "S: 550 5.1.1 Recipient address rejected: no such mailbox here"
TEMPFAIL = Reply(451, "4.3.0", "Try again later")


def _policy(req: RcptRequest) -> Reply | None:
    local = req.recipient.address.split("@")[0]
    if local.startswith("nobody"):
        return UNKNOWN_RECIPIENT
    if local.startswith("later"):
        return TEMPFAIL
    return None


def _throttles(t) -> list[Throttle]:
    return [e for e in t.events if isinstance(e, Throttle)]


def test_probing_is_slowed_after_the_soft_limit_and_cut_off_at_the_hard_limit(transcript):
    t = transcript(LIMITS, rcpt_policy=_policy)
    t.run(
        GREETING
        + f"""
        C: HELO probe.test
        S: 250 mx.test
        C: MAIL FROM:<p@probe.test>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<nobody1@mx.test>
        {UNKNOWN}
        C: RCPT TO:<nobody2@mx.test>
        {UNKNOWN}
        C: RCPT TO:<nobody3@mx.test>
        {UNKNOWN}
        C: RCPT TO:<nobody4@mx.test>
        {UNKNOWN}
        S: 421 4.7.0 Too many errors, closing connection; try again later
        ! closed
        """
    )
    # The third and fourth error replies (past the soft limit of 2) are held back.
    assert _throttles(t) == [Throttle(0.5), Throttle(0.5)]
    assert isinstance(t.events[-1], Close) and t.events[-1].reason == "too many errors"
    assert t.events.index(_throttles(t)[-1]) < len(t.events) - 1  # the delay comes first


def test_pipelined_probes_stop_at_the_throttle(transcript):
    """The machine reads no further pipelined command once it asked for a delay."""
    t = transcript(LIMITS, rcpt_policy=_policy)
    t.run(GREETING + "C: HELO probe.test\nS: 250 mx.test\n")
    t.conn.receive_data(b"MAIL FROM:<p@probe.test>\r\n" + b"RCPT TO:<nobody@mx.test>\r\n" * 10)
    seen = []
    while (ev := t.conn.next_event()) is not None:
        seen.append(ev)
        if isinstance(ev, RcptRequest):
            t.conn.reject_rcpt(UNKNOWN_RECIPIENT)
        if isinstance(ev, Throttle):
            break
    assert sum(isinstance(e, RcptRequest) for e in seen) == 3
    assert t.conn.state is State.COMMAND  # the other seven wait until the shell reads on


def test_a_few_mistakes_and_temporary_refusals_are_not_punished(transcript):
    t = transcript(LIMITS, rcpt_policy=_policy)
    t.run(
        GREETING
        + f"""
        C: HELO client.test
        S: 250 mx.test
        C: MAIL FROM:<a@client.test>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<nobody@mx.test>
        {UNKNOWN}
        C: RCPT TO:<later1@mx.test>
        S: 451 4.3.0 Try again later
        C: RCPT TO:<later2@mx.test>
        S: 451 4.3.0 Try again later
        C: RCPT TO:<later3@mx.test>
        S: 451 4.3.0 Try again later
        C: RCPT TO:<support@mx.test>
        S: 250 2.1.5 Recipient OK
        C: DATA
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: Subject: hi
        C:
        C: .
        S: 250 2.0.0 OK: queued as Q1
        """
    )
    assert _throttles(t) == [] and not t.closed


def test_protocol_errors_count_towards_the_limits_too(transcript):
    t = transcript(LIMITS, rcpt_policy=_policy)
    t.run(
        GREETING
        + f"""
        C: FOO
        S: 500 5.5.2 Command not recognized; send HELP for the list
        C: HELO client.test
        S: 250 mx.test
        C: MAIL FROM:<a@client.test>
        S: 250 2.1.0 Sender OK
        C: BAR
        S: 500 5.5.2 Command not recognized; send HELP for the list
        C: RCPT TO:<nobody@mx.test>
        {UNKNOWN}
        C: RCPT TO:<nobody2@mx.test>
        {UNKNOWN}
        S: 421 4.7.0 Too many errors, closing connection; try again later
        ! closed
        """
    )
    assert len(_throttles(t)) == 2


def test_default_limits_follow_postfix():
    s = ProtocolSettings("mx.test")
    assert (s.soft_error_limit, s.hard_error_limit, s.error_delay) == (10, 20, 1.0)


JUNK = ProtocolSettings("mx.test", soft_error_limit=2, hard_error_limit=4, error_delay=0.5,
                        junk_command_limit=3)


def test_a_client_cannot_hold_the_connection_with_junk_commands(transcript):
    """Postfix smtpd_junk_command_limit: past the limit every NOOP/RSET/VRFY/HELP counts as an
    error, so a client that only keeps the session alive (a NOOP before each idle timeout)
    is slowed and then cut off like one that makes errors."""
    t = transcript(JUNK)
    t.run(
        GREETING
        + """
        C: HELO idle.test
        S: 250 mx.test
        C: NOOP
        S: 250 2.0.0 OK
        C: RSET
        S: 250 2.0.0 OK
        C: VRFY postmaster
        S: 252 2.1.5 Cannot VRFY user, but will accept message and attempt delivery
        C: NOOP
        S: 250 2.0.0 OK
        C: HELP
        S: 214-2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS
        S: 214 2.0.0 See RFC 5321 for the syntax of each command
        C: NOOP
        S: 250 2.0.0 OK
        C: NOOP
        S: 250 2.0.0 OK
        S: 421 4.7.0 Too many errors, closing connection; try again later
        ! closed
        """
    )
    assert _throttles(t) == [Throttle(0.5), Throttle(0.5)]


def test_the_junk_count_starts_again_after_each_accepted_message(transcript):
    t = transcript(JUNK)
    t.run(GREETING + "C: HELO client.test\nS: 250 mx.test\n")
    for n in range(1, 4):
        t.run(
            f"""
            C: NOOP
            S: 250 2.0.0 OK
            C: NOOP
            S: 250 2.0.0 OK
            C: RSET
            S: 250 2.0.0 OK
            C: MAIL FROM:<a@client.test>
            S: 250 2.1.0 Sender OK
            C: RCPT TO:<b@mx.test>
            S: 250 2.1.5 Recipient OK
            C: DATA
            S: 354 Start mail input; end with <CRLF>.<CRLF>
            C: Subject: x
            C:
            C: body
            C: .
            S: 250 2.0.0 OK: queued as Q{n}
            """
        )
    assert _throttles(t) == [] and t.conn.state is not State.CLOSED
