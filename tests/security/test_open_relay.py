"""Open relay: mailcase accepts mail only for its configured receiving addresses and never
relays. Every old trick that made a server forward mail elsewhere must be refused at RCPT
(5xx, so no bounce goes to a forged sender) and must leave nothing to deliver: the percent
hack, source routes (RFC 5321 §3.6.1, §C), two `@`s, quoted local parts holding an address,
bang paths, and plain unknown or look-alike domains. Against a running mailcase."""

from __future__ import annotations

import json
import smtplib
import uuid

import pytest

from tests.support.platform import Platform
from tests.support.rawsmtp import RawClient, stored_messages

FORMS = [
    "victim@elsewhere.test",  # a domain we do not serve
    "postmaster@elsewhere.test",
    "support@example.test.elsewhere.test",  # look-alike domains
    "support@sub.example.test",
    "support@[127.0.0.1]",
    "victim%elsewhere.test@example.test",  # the percent hack
    "support%example.test@elsewhere.test",
    "@example.test:victim@elsewhere.test",  # source routes
    "@example.test,@elsewhere.test:victim@elsewhere.test",
    "victim@elsewhere.test@example.test",  # user@other@domain
    "support@example.test@elsewhere.test",
    '"victim@elsewhere.test"@example.test',  # quoted local parts
    '"support@example.test"@elsewhere.test',
    '"victim%elsewhere.test"@example.test',
    "elsewhere.test!victim@example.test",  # bang path
]


@pytest.mark.parametrize("rcpt", FORMS)
def test_relay_forms_are_refused_at_rcpt(platform: Platform, rcpt: str) -> None:
    c = RawClient(platform)
    try:
        c.reply()
        c.cmd("EHLO relay.test")
        assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
        reply = c.cmd(f"RCPT TO:<{rcpt}>")
        assert reply[:1] == "5", (rcpt, reply)
        assert c.cmd("DATA")[:1] == "5"  # no recipient: no content is taken
        # The session is not broken: a real recipient is still accepted after it.
        assert c.cmd("RCPT TO:<support@example.test>").startswith("250")
        assert c.cmd("QUIT").startswith("221")
    finally:
        c.close()


def test_nothing_is_queued_for_delivery_after_relay_attempts(platform: Platform) -> None:
    mid = f"<{uuid.uuid4()}@relay.test>"
    with smtplib.SMTP(*platform.smtp, timeout=10) as s:
        s.ehlo("relay.test")
        s.mail("alice@sender.test")
        for rcpt in FORMS:
            assert s.rcpt(rcpt)[0] >= 500, rcpt
        assert s.rcpt("support@example.test")[0] == 250
        s.data(f"Message-ID: {mid}\r\nSubject: relay?\r\n\r\nx\r\n".encode())
    (stored,) = [m for m in stored_messages(platform) if m["message_id"] == mid]
    assert stored["rcpt_to"] == ["support@example.test"]
    assert json.loads(platform.cli("outbound", "list", "--json").stdout) == []


def test_unknown_recipient_and_relay_attempt_are_refused_at_rcpt(platform: Platform) -> None:
    with smtplib.SMTP(*platform.smtp, timeout=10) as s:
        s.ehlo("x.sender.test")
        s.mail("alice@sender.test")
        code, text = s.rcpt("nobody@example.test")
        assert (code, text[:5]) == (550, b"5.1.1")
        code, text = s.rcpt("victim@elsewhere.test")
        assert (code, text[:5]) == (550, b"5.7.1")
        assert b"Relay" in text
