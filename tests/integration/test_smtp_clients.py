"""The gateway against real SMTP clients: Python's smtplib and aiosmtplib, raw sockets for
what no library sends (BDAT, pipelining). The attacks (smuggling endings, STARTTLS injection,
relay attempts) live in tests/security/."""

from __future__ import annotations

import smtplib
import ssl
import time
import uuid
from email.message import EmailMessage

import aiosmtplib
import pytest

from tests.support.platform import Platform
from tests.support.rawsmtp import RawClient, find_message, log_entries


def _msg(to: str = "support@example.test", subject: str | None = None, body: str = "hello\n") -> EmailMessage:
    m = EmailMessage()
    m["From"] = "alice@sender.test"
    m["To"] = to
    m["Subject"] = subject or f"test {uuid.uuid4()}"
    m["Message-ID"] = f"<{uuid.uuid4()}@sender.test>"
    m.set_content(body)
    return m


# ------------------------------------------------------------------ smtplib
def test_smtplib_plain_delivery_is_stored_and_logged(platform: Platform) -> None:
    m = _msg()
    with smtplib.SMTP(*platform.smtp, timeout=10) as s:
        s.ehlo("client.sender.test")
        refused = s.send_message(m, from_addr="alice@sender.test", to_addrs=["support@example.test"])
        assert refused == {}
    stored = find_message(platform, m["Message-ID"])
    assert stored["mail_from"] == "alice@sender.test"
    assert stored["rcpt_to"] == ["support@example.test"]
    assert stored["tls_version"] is None
    # The pipeline marks it received for its address (processed), exactly once.
    deadline = time.monotonic() + 10
    while find_message(platform, m["Message-ID"])["state"] != "processed":
        assert time.monotonic() < deadline, "not processed"
        time.sleep(0.1)
    entries = log_entries(platform, queue_id=stored["queue_id"])
    outcomes = sorted(e["outcome"] for e in entries)
    assert outcomes == ["accepted", "processed"]
    accepted = next(e for e in entries if e["outcome"] == "accepted")
    assert accepted["helo"] == "client.sender.test"
    assert accepted["reply_code"] == 250
    assert accepted["message_id"] == m["Message-ID"]


def test_smtplib_starttls_records_tls_facts_in_received_and_log(platform: Platform, client_tls: ssl.SSLContext) -> None:
    m = _msg(to="secure@example.test")
    with smtplib.SMTP(*platform.smtp, timeout=10) as s:
        s.ehlo("tls.sender.test")
        assert s.has_extn("starttls")
        s.starttls(context=client_tls)
        s.ehlo("tls.sender.test")
        assert not s.has_extn("starttls")
        assert s.has_extn("requiretls")
        s.send_message(m, from_addr="alice@sender.test", to_addrs=["secure@example.test"])
    stored = find_message(platform, m["Message-ID"])
    assert stored["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert stored["tls_cipher"]
    entry = log_entries(platform, queue_id=stored["queue_id"], outcome="accepted")[0]
    assert entry["tls_version"] == stored["tls_version"]
    assert entry["tls_cipher"] == stored["tls_cipher"]


def test_require_tls_address_refused_in_plaintext_before_any_content(platform: Platform) -> None:
    c = RawClient(platform)
    try:
        assert c.reply().startswith("220")
        assert c.cmd("EHLO plain.sender.test").startswith("250")
        assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
        r = c.cmd("RCPT TO:<secure@example.test>")
        assert r.startswith("530 5.7.0 Must issue a STARTTLS command first")
        assert c.cmd("DATA").startswith("554")
    finally:
        c.close()
    entry = log_entries(platform, address="secure@example.test", outcome="rejected")[0]
    assert entry["reply_code"] == 530
    assert "TLS" in entry["reason"]


def test_oversized_message_refused_with_552(platform: Platform) -> None:
    big = _msg(body="x" * 80 + "\n")
    big.set_content(("y" * 900 + "\n") * 1300)  # about 1.2 MB > 1 MiB configured
    with smtplib.SMTP(*platform.smtp, timeout=30) as s:
        s.ehlo("big.sender.test")
        assert int(s.esmtp_features["size"]) == 1048576
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.send_message(big, from_addr="alice@sender.test", to_addrs=["support@example.test"])
        assert e.value.smtp_code == 552
    # Without SIZE announced the limit is enforced after DATA.
    c = RawClient(platform)
    try:
        c.reply()
        c.cmd("EHLO big.sender.test")
        assert c.cmd("MAIL FROM:<alice@sender.test>").startswith("250")
        assert c.cmd("RCPT TO:<support@example.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send(b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 1100 + b".\r\n")
        assert c.reply().startswith("552 5.3.4")
    finally:
        c.close()


# ------------------------------------------------------------------ aiosmtplib
async def test_aiosmtplib_starttls_several_messages_on_one_connection(platform: Platform, client_tls: ssl.SSLContext) -> None:
    # aiosmtplib does not pipeline; pipelining is exercised with raw clients below.
    msgs = [_msg() for _ in range(5)]
    client = aiosmtplib.SMTP(hostname=platform.smtp[0], port=platform.smtp[1], start_tls=True,
                             tls_context=client_tls, timeout=10)
    async with client:
        await client.ehlo()
        assert client.supports_extension("pipelining") and client.supports_extension("requiretls")
        for m in msgs:
            errors, response = await client.send_message(m, sender="bob@sender.test",
                                                         recipients=["support@example.test", "secure@example.test"])
            assert errors == {}
            assert "queued as" in response
    for m in msgs:
        stored = find_message(platform, m["Message-ID"])
        assert stored["rcpt_to"] == ["support@example.test", "secure@example.test"]
        assert stored["tls_version"] in ("TLSv1.2", "TLSv1.3")


async def test_aiosmtplib_plain_pipelined_recipients_with_one_refused(platform: Platform) -> None:
    m = _msg()
    client = aiosmtplib.SMTP(hostname=platform.smtp[0], port=platform.smtp[1], start_tls=False, timeout=10)
    async with client:
        errors, _ = await client.send_message(m, sender="bob@sender.test",
                                              recipients=["support@example.test", "ghost@example.test"])
    assert set(errors) == {"ghost@example.test"}
    assert find_message(platform, m["Message-ID"])["rcpt_to"] == ["support@example.test"]


def test_pipelined_transactions_in_one_segment(platform: Platform) -> None:
    """RFC 2920: MAIL, RCPTs and DATA in one write; replies come back in order."""
    mids = [f"<{uuid.uuid4()}@pipe.test>" for _ in range(3)]
    c = RawClient(platform)
    try:
        c.reply()
        assert "PIPELINING" in c.cmd("EHLO pipe.sender.test")
        for mid in mids:
            c.send(b"MAIL FROM:<p@sender.test>\r\nRCPT TO:<support@example.test>\r\n"
                   b"RCPT TO:<ghost@example.test>\r\nDATA\r\n")
            assert c.reply().startswith("250")
            assert c.reply().startswith("250")
            assert c.reply().startswith("550 5.1.1")
            assert c.reply().startswith("354")
            c.send(f"Message-ID: {mid}\r\nSubject: p\r\n\r\n..dot\r\n.\r\n".encode())
            assert "queued as" in c.reply()
        c.send(b"RSET\r\nNOOP\r\nQUIT\r\n")
        assert [c.reply()[:3] for _ in range(3)] == ["250", "250", "221"]
    finally:
        c.close()
    for mid in mids:
        assert find_message(platform, mid)["rcpt_to"] == ["support@example.test"]


# ------------------------------------------------------------------ BDAT / CHUNKING
def test_bdat_chunks_with_pipelining(platform: Platform) -> None:
    mid = f"<{uuid.uuid4()}@bdat.test>"
    body = f"From: a@sender.test\r\nTo: support@example.test\r\nMessage-ID: {mid}\r\nSubject: bdat\r\n\r\nline one\r\n.leading dot stays\r\n".encode()
    part1, part2 = body[:40], body[40:]
    c = RawClient(platform)
    try:
        c.reply()
        ehlo = c.cmd("EHLO bdat.sender.test")
        assert "CHUNKING" in ehlo and "PIPELINING" in ehlo
        c.send(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<support@example.test>\r\n"
               + f"BDAT {len(part1)}\r\n".encode() + part1
               + f"BDAT {len(part2)} LAST\r\n".encode() + part2)
        assert c.reply().startswith("250")
        assert c.reply().startswith("250")
        assert c.reply().startswith("250")
        last = c.reply()
        assert last.startswith("250") and "queued as" in last
        assert c.cmd("QUIT").startswith("221")
    finally:
        c.close()
    stored = find_message(platform, mid)
    assert stored["size"] > len(body)  # our Received header was prepended


# ------------------------------------------------------------------ protocol hygiene
def test_vrfy_help_noop_rset_and_unknown_commands(platform: Platform) -> None:
    c = RawClient(platform)
    try:
        c.reply()
        assert c.cmd("EHLO hygiene.test").startswith("250")
        assert c.cmd("VRFY support").startswith("252")
        assert c.cmd("HELP").startswith("214")
        assert c.cmd("NOOP").startswith("250")
        assert c.cmd("RSET").startswith("250")
        assert c.cmd("FOO bar").startswith("500")
        assert c.cmd("RCPT TO:<support@example.test>").startswith("503")
    finally:
        c.close()


def test_received_header_records_tls_facts_like_postfix(platform: Platform, client_tls: ssl.SSLContext) -> None:
    m = _msg()
    with smtplib.SMTP(*platform.smtp, timeout=10) as s:
        s.starttls(context=client_tls)
        s.ehlo("rcvd.sender.test")
        s.send_message(m, from_addr="alice@sender.test", to_addrs=["support@example.test"])
    stored = find_message(platform, m["Message-ID"])
    raw = platform.cli("messages", "show", stored["queue_id"], "--raw").stdout  # text mode: \r\n → \n
    first = raw.split("\n\t")
    assert first[0] == "Received: from rcvd.sender.test ([127.0.0.1])"
    assert first[1].startswith(f"by mailcase.localhost (mailcase) with ESMTPS id {stored['queue_id']}")
    assert f"(using {stored['tls_version']} with cipher {stored['tls_cipher']} (" in raw
    assert m["Subject"] in raw
    with platform.api() as api:
        r = api.get(f"/api/v1/messages/{stored['queue_id']}/raw")
        assert r.status_code == 200 and r.headers["content-type"] == "message/rfc822"
        assert r.content.decode().replace("\r\n", "\n") == raw
        assert r.content.startswith(b"Received: from rcvd.sender.test ([127.0.0.1])\r\n\tby ")
