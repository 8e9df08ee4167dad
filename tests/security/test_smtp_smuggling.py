"""SMTP smuggling (CVE-2023-51764 and kin): an end of data other than <CRLF>.<CRLF> (bare LF,
bare CR, NUL tricks) must never end DATA, so a second message hidden in the first, with its own
MAIL FROM, is never accepted. Against a running mailcase over a raw socket; the sans-IO core's
own cases are in tests/unit/smtp/test_smtp_smuggling.py."""

from __future__ import annotations

import uuid

import pytest

from tests.support.platform import Platform
from tests.support.rawsmtp import RawClient, stored_messages

SMUGGLE_ENDINGS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r.\n", b"\r\n.\n", b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"]


@pytest.mark.parametrize("ending", SMUGGLE_ENDINGS, ids=lambda e: repr(e))
def test_smuggling_endings_never_end_data(platform: Platform, ending: bytes) -> None:
    mid = f"<{uuid.uuid4()}@smuggle.test>"
    smuggled_mid = f"<{uuid.uuid4()}@evil.test>"
    c = RawClient(platform)
    try:
        c.reply()
        c.cmd("EHLO smuggler.test")
        assert c.cmd("MAIL FROM:<a@sender.test>").startswith("250")
        assert c.cmd("RCPT TO:<support@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        payload = (
            f"Message-ID: {mid}\r\nSubject: hi\r\n\r\nfirst".encode() + ending
            + b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n"
            + f"Message-ID: {smuggled_mid}\r\nSubject: smuggled\r\n\r\nevil\r\n".encode()
            + b".\r\n"
        )
        c.send(payload)
        final = c.reply()
        # The only end of data is the real <CRLF>.<CRLF>: one reply, refusing the message.
        assert final[:1] == "5", final
        assert c.no_more_replies()
        assert c.cmd("QUIT").startswith("221")
    finally:
        c.close()
    ids = {m["message_id"] for m in stored_messages(platform)}
    assert smuggled_mid not in ids
    assert mid not in ids
