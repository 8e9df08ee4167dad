"""STARTTLS command injection (CVE-2011-0411 and kin): commands pipelined after STARTTLS in
plaintext must be discarded, never answered or acted on inside the encrypted session. Against
a running mailcase, on the default (uvloop) and the standard asyncio event loop."""

from __future__ import annotations

import smtplib
import ssl
import uuid
from email.message import EmailMessage

import pytest

from tests.support.platform import Platform, running_platform
from tests.support.rawsmtp import RawClient, find_message


def _msg(to: str) -> EmailMessage:
    m = EmailMessage()
    m["From"] = "alice@sender.test"
    m["To"] = to
    m["Subject"] = f"test {uuid.uuid4()}"
    m["Message-ID"] = f"<{uuid.uuid4()}@sender.test>"
    m.set_content("hello\n")
    return m


def _inject_starttls(p: Platform, client_tls: ssl.SSLContext) -> tuple[RawClient, ssl.SSLSocket]:
    """`STARTTLS\r\nRSET\r\n` in one segment: the 220 comes, then the handshake, and the
    injected RSET is never answered over the encrypted channel."""
    c = RawClient(p)
    c.reply()
    c.cmd("EHLO inject.test")
    c.send(b"STARTTLS\r\nRSET\r\n")
    assert c.reply().startswith("220")
    assert c.buf == b""
    tls = client_tls.wrap_socket(c.sock, server_hostname="mailcase.localhost")
    tls.settimeout(1.0)
    with pytest.raises(TimeoutError):
        tls.recv(1024)
    return c, tls


def test_starttls_command_injection_is_discarded(platform: Platform, client_tls: ssl.SSLContext) -> None:
    assert "uvloop loop" in platform.log_text()  # the default loop is the one tested here
    c, tls = _inject_starttls(platform, client_tls)
    try:
        tls.settimeout(10)
        tls.sendall(b"EHLO inject.test\r\n")
        data = b""
        while b"250 " not in data:
            data += tls.recv(4096)
        assert data.startswith(b"250-")
        tls.close()
    finally:
        c.close()


def test_standard_asyncio_loop_serves_starttls_and_drops_injection(
    tmp_path_factory: pytest.TempPathFactory, client_tls: ssl.SSLContext
) -> None:
    """`server.event_loop = "asyncio"` (the fallback to uvloop, the default) runs the same
    STARTTLS path: delivery over TLS works and pipelined plaintext is still dropped."""
    tmp = tmp_path_factory.mktemp("asyncio-loop")
    config = '[server]\nevent_loop = "asyncio"\n[inbound]\nprocesses = 2\n'
    with running_platform(tmp, config=config) as p:
        p.cli("address", "add", "secure@example.test", "--require-tls")
        assert "2 acceptor processes, asyncio loop" in p.log_text()
        c, tls = _inject_starttls(p, client_tls)
        tls.close()
        c.close()
        m = _msg(to="secure@example.test")
        with smtplib.SMTP(*p.smtp, timeout=10) as s:
            s.starttls(context=client_tls)
            assert s.send_message(m, from_addr="alice@sender.test",
                                  to_addrs=["secure@example.test"]) == {}
        assert find_message(p, m["Message-ID"])["tls_version"] in ("TLSv1.2", "TLSv1.3")
