import datetime as dt

from mailcase.inbound.received import received_header
from mailcase.mime import message_id
from mailcase.smtp.server import TLSFacts


def test_message_id_found_unfolded_and_only_in_header_block() -> None:
    assert message_id(b"Subject: x\r\nMessage-ID:\r\n <a@b>\r\n\r\nbody") == "<a@b>"
    assert message_id(b"message-id: <c@d>\r\n\r\n") == "<c@d>"
    assert message_id(b"Subject: x\r\n\r\nMessage-ID: <body@b>\r\n") is None
    assert message_id(b"Message-ID:   \r\n\r\n") is None


def test_received_header_records_tls_like_postfix() -> None:
    h = received_header(
        helo="mx.sender.test", client_ip="192.0.2.1", hostname="mx.mailcase.test", queue_id="ABC",
        esmtp=True, tls=TLSFacts("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256), smtputf8=False,
        recipient="support@example.test", when=dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC),
    ).decode()
    assert h.startswith("Received: from mx.sender.test ([192.0.2.1])\r\n\tby mx.mailcase.test (mailcase) with ESMTPS id ABC\r\n")
    assert "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))" in h
    assert h.endswith("for <support@example.test>; Thu, 26 Nov 2026 12:00:00 +0000\r\n")


def test_received_header_sanitises_helo_and_plain_keyword() -> None:
    h = received_header(
        helo="evil\x00 (forged) by x", client_ip="::1", hostname="h", queue_id="Q", esmtp=False,
        tls=None, smtputf8=False, recipient=None, when=dt.datetime.now(dt.UTC),
    ).decode()
    assert "with SMTP id Q" in h and "[IPv6:::1]" in h
    assert "(forged)" not in h and "\x00" not in h and "using" not in h
