"""The private Postfix instance (tests/support/postfix.py) used by tests and by bench/.

Discard mode must accept and discard; relay mode must deliver what it receives into another
SMTP server on loopback (here a tiny asyncio sink defined below), plain or with STARTTLS, and
log the TLS facts of that hop. Instances must not touch /etc/postfix and must run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.peers import needs
from tests.support.postfix import (
    PostfixInstance,
    free_port,
    generate_p256_certificate,
    postfix_available,
)

_UNAVAILABLE = postfix_available()

pytestmark = [
    pytest.mark.postfix,
    needs(_UNAVAILABLE),
    pytest.mark.timeout(120),
]


def message(subject: str) -> bytes:
    return (
        f"From: a@sender.test\r\nTo: bench@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4()}@sender.test>\r\n\r\nhello from the harness test\r\n"
    ).encode()


# --------------------------------------------------------------------------- a minimal sink


@dataclass
class Received:
    mail_from: str
    rcpt_to: list[str]
    data: bytes
    tls: bool


@dataclass
class Sink:
    """An SMTP receiver on loopback that accepts everything and records it (its own thread and
    event loop, since the Postfix helpers block). Offers STARTTLS when given a context."""

    tls: ssl.SSLContext | None = None
    port: int = 0
    received: list[Received] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _done: asyncio.Event | None = None

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        in_tls = False
        mail_from, rcpts = "", []
        try:
            writer.write(b"220 sink.test ESMTP\r\n")
            for _ in range(1000):  # bounded: a test sends a handful of commands
                line = await asyncio.wait_for(reader.readline(), 30)
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    ext = [b"250-sink.test", b"250-8BITMIME"]
                    if self.tls is not None and not in_tls:
                        ext.append(b"250-STARTTLS")
                    ext.append(b"250 SIZE 10240000")
                    writer.write(b"\r\n".join(ext) + b"\r\n")
                elif verb == b"STAR" and self.tls is not None and not in_tls:
                    writer.write(b"220 2.0.0 go ahead\r\n")
                    await writer.drain()
                    await writer.start_tls(self.tls)
                    in_tls = True
                elif verb == b"MAIL":
                    mail_from, rcpts = line.decode().split(":", 1)[1].strip(), []
                    writer.write(b"250 2.1.0 ok\r\n")
                elif verb == b"RCPT":
                    rcpts.append(line.decode().split(":", 1)[1].strip())
                    writer.write(b"250 2.1.5 ok\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go on\r\n")
                    await writer.drain()
                    data = await asyncio.wait_for(reader.readuntil(b"\r\n.\r\n"), 30)
                    self.received.append(Received(mail_from, rcpts, data[:-3], in_tls))
                    writer.write(f"250 2.0.0 Ok: queued as sink{len(self.received)}\r\n".encode())
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                else:  # RSET, NOOP, ...
                    writer.write(b"250 2.0.0 ok\r\n")
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError):
            return
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def _main(self) -> None:
        self._done = asyncio.Event()
        server = await asyncio.start_server(self._session, "127.0.0.1", self.port)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._done.wait()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[Sink]:
        t = threading.Thread(target=self._run, daemon=True)
        t.start()
        assert self._ready.wait(10), "sink did not start"
        try:
            yield self
        finally:
            assert self._loop is not None and self._done is not None
            self._loop.call_soon_threadsafe(self._done.set)
            t.join(10)


# --------------------------------------------------------------------------- tests


def test_discard_mode_accepts_and_discards(tmp_path: Path) -> None:
    etc_before = sorted(os.listdir("/etc/postfix")) if os.path.isdir("/etc/postfix") else None
    with PostfixInstance(tmp_path, smtpd_port=free_port(), load_test=True) as pf:
        assert pf.started_in is not None and pf.started_in < 30
        res = pf.send("a@sender.test", ["bench@example.test"], message("discard"))
        assert res.code == 250
        assert res.queue_id is not None, res.reply
        d = pf.wait_delivery(res.queue_id)
        assert (d.service, d.status, d.recipient) == ("discard", "sent", "bench@example.test")
        assert re.search(rf"postfix/discard\[\d+\]: {res.queue_id}: to=<bench@example.test>,"
                         r".* status=sent", pf.maillog())
        # Its own directories, not the system's.
        cf = pf.postconf("config_directory", "queue_directory", "data_directory",
                         "inet_interfaces", "default_transport")
        for key in ("config_directory", "queue_directory", "data_directory"):
            assert cf[key].startswith(str(pf.root)), cf
        assert cf["inet_interfaces"] == "127.0.0.1"
        assert cf["default_transport"] == "discard"
        pf.wait_queue_empty(10)
        master = pf.master_pid
        assert master is not None and pf.running
    assert not pf.running
    assert not Path(f"/proc/{master}/stat").exists() or "Z" in Path(
        f"/proc/{master}/stat").read_text().rsplit(")", 1)[1].split()[0]
    etc_after = sorted(os.listdir("/etc/postfix")) if os.path.isdir("/etc/postfix") else None
    assert etc_before == etc_after


def test_instances_run_side_by_side(tmp_path: Path) -> None:
    with (PostfixInstance(tmp_path, smtpd_port=free_port()) as a,
          PostfixInstance(tmp_path, smtpd_port=free_port()) as b):
        assert a.root != b.root and a.master_pid != b.master_pid
        for pf in (a, b):
            res = pf.send("a@sender.test", ["x@example.test"], message("two"))
            assert pf.wait_delivery(res.queue_id or "").status == "sent"
        # Each logs only its own mail.
        assert res.queue_id not in a.maillog()


def test_smtpd_starttls_with_generated_p256_certificate(tmp_path: Path) -> None:
    with PostfixInstance(tmp_path, smtpd_tls=True,
                         settings={"smtpd_tls_loglevel": "1"}) as pf:
        assert pf.cert_path is not None and pf.cert_path.exists()
        res = pf.send("a@sender.test", ["bench@example.test"], message("tls"), starttls=True)
        assert res.code == 250
        assert pf.wait_delivery(res.queue_id or "").status == "sent"
        m = pf.wait_for_log(r"postfix/smtpd\[\d+\]: \w+ TLS connection established from "
                            r"\S+: (TLSv[\d.]+) with cipher (\S+)")
        assert m.group(1) == "TLSv1.3"


def test_relay_mode_delivers_into_sink(tmp_path: Path) -> None:
    with Sink().running() as sink, PostfixInstance(tmp_path, relay_port=sink.port) as pf:
        res = pf.send("a@sender.test", ["someone@example.test"], message("relay plain"))
        assert res.code == 250
        d = pf.wait_delivery(res.queue_id or "")
        assert d.status == "sent", d.line
        assert d.service == "smtp"
        assert d.relay == f"127.0.0.1[127.0.0.1]:{sink.port}"
        assert "queued as sink1" in d.detail
        assert len(sink.received) == 1
        got = sink.received[0]
        assert got.mail_from.split()[0] == "<a@sender.test>"  # then " SIZE=..."
        assert got.rcpt_to == ["<someone@example.test>"]
        assert b"Subject: relay plain" in got.data
        assert not got.tls
        assert pf.tls_line_for(d) is None


def test_relay_mode_encrypt_logs_tls_facts(tmp_path: Path) -> None:
    cert, key = tmp_path / "sink.pem", tmp_path / "sink.key"
    generate_p256_certificate(cert, key, "sink.test")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with (Sink(tls=ctx).running() as sink,
          PostfixInstance(tmp_path, relay_port=sink.port, smtp_tls_security_level="encrypt",
                          smtp_tls_CAfile=cert) as pf):
        res = pf.send("a@sender.test", ["someone@example.test"], message("relay tls"))
        d = pf.wait_delivery(res.queue_id or "")
        assert d.status == "sent", d.line
        assert sink.received and sink.received[0].tls
        line = pf.tls_line_for(d)
        assert line is not None, pf.maillog()
        # The CA file lists the sink's certificate, so Postfix calls it "Trusted" (the peer
        # name is not checked at "encrypt").
        assert re.match(rf"Trusted TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:"
                        rf"{sink.port}: TLSv1\.3 with cipher \S+", line), line


def test_relay_mode_encrypt_defers_without_starttls(tmp_path: Path) -> None:
    with (Sink().running() as sink,
          PostfixInstance(tmp_path, relay_port=sink.port,
                          smtp_tls_security_level="encrypt") as pf):
        res = pf.send("a@sender.test", ["someone@example.test"], message("no tls"))
        d = pf.wait_delivery(res.queue_id or "", final=False)
        assert d.status == "deferred"
        assert "TLS is required, but was not offered" in d.detail, d.line
        assert sink.received == []


def test_restart_keeps_the_queue(tmp_path: Path) -> None:
    """stop() keeps the directory: a message deferred before the stop is delivered after the
    next start(), once its receiver is up."""
    port = free_port()  # nothing listens there yet
    pf = PostfixInstance(tmp_path, relay_port=port)
    try:
        pf.start()
        root = pf.root
        res = pf.send("a@sender.test", ["someone@example.test"], message("restart"))
        assert pf.wait_delivery(res.queue_id or "", final=False).status == "deferred"
        pf.stop()
        assert not pf.running and pf.queue_size() == 1
        with Sink(port=port).running() as sink:
            pf.start()
            assert pf.root == root
            pf.flush()
            d = pf.wait_delivery(res.queue_id or "")
            assert d.status == "sent", d.line
            assert len(sink.received) == 1
    finally:
        pf.close()
    assert not pf.running
