"""Long lines (issue 10, part 5): accepted and stored byte-exact, as Postfix accepts them; the
bare CR/LF smuggling defences are unchanged.

A message with a line over 1 000 octets used to get 500 5.5.2; broken web forms and old
clients send such mail, and a helpdesk must not bounce a customer for it.
"""

from __future__ import annotations

import json
import smtplib
import socket
import time
import uuid
from typing import Any

import pytest

from tests.support.platform import Platform


def _stored_raw(p: Platform, message_id: str, timeout: float = 30.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        for m in json.loads(p.cli("messages", "list", "--json").stdout):
            if m["message_id"] == message_id:
                with p.api() as api:
                    r = api.get(f"/api/v1/messages/{m['queue_id']}/raw")
                    assert r.status_code == 200
                    return r.content
        assert time.monotonic() < deadline, f"{message_id} not stored"
        time.sleep(0.2)


def _message(mid: str, lines: list[bytes]) -> bytes:
    head = f"From: <customer@sender.test>\r\nSubject: long\r\nMessage-ID: {mid}\r\n\r\n"
    return head.encode() + b"".join(line + b"\r\n" for line in lines)


def _reply(f: Any) -> bytes:
    out = b""
    while line := f.readline():
        out += line
        if line[3:4] != b"-":
            break
    return out


def test_a_message_with_long_lines_is_accepted_and_stored_byte_exact(platform: Platform) -> None:
    mid = f"<{uuid.uuid4()}@sender.test>"
    body = _message(mid, [
        b"short",
        b"a" * 5000,  # a web form's whole text area on one line
        b".starts with a dot " + b"b" * 3000,  # dot-stuffed on the wire, one dot stored
        bytes(range(0x20, 0x7F)) * 2000,  # 190 000 octets
        b"end",
    ])
    with smtplib.SMTP(*platform.smtp, timeout=30) as c:
        assert c.sendmail("customer@sender.test", ["support@example.test"], body) == {}
    raw = _stored_raw(platform, mid)
    assert raw.startswith(b"Received: ")
    assert raw.endswith(body) and raw[raw.index(b"From: <customer@") :] == body


def test_a_bdat_message_with_long_lines_is_stored_byte_exact(platform: Platform) -> None:
    mid = f"<{uuid.uuid4()}@sender.test>"
    body = _message(mid, [b"c" * 70_000, b"d" * 1001])
    with socket.create_connection(platform.smtp, timeout=30) as s, s.makefile("rb") as f:
        assert _reply(f).startswith(b"220")
        s.sendall(b"EHLO bdat.test\r\n")
        assert b"CHUNKING" in _reply(f)
        s.sendall(b"MAIL FROM:<customer@sender.test>\r\nRCPT TO:<support@example.test>\r\n")
        assert _reply(f).startswith(b"250") and _reply(f).startswith(b"250")
        half = len(body) // 2
        s.sendall(b"BDAT %d\r\n" % half + body[:half])
        assert _reply(f).startswith(b"250")
        s.sendall(b"BDAT %d LAST\r\n" % (len(body) - half) + body[half:])
        assert _reply(f).startswith(b"250 2.0.0 OK: queued")
    assert _stored_raw(platform, mid).endswith(body)


@pytest.mark.parametrize("ending", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"])
def test_smuggling_endings_in_long_lines_are_still_refused(platform: Platform, ending: bytes) -> None:
    """Guard: leniency on length changes nothing for bare CR/LF (they passed before too)."""
    with socket.create_connection(platform.smtp, timeout=30) as s, s.makefile("rb") as f:
        assert _reply(f).startswith(b"220")
        s.sendall(b"EHLO smuggle.test\r\n")
        assert _reply(f).startswith(b"250")
        s.sendall(b"MAIL FROM:<customer@sender.test>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n")
        assert _reply(f).startswith(b"250") and _reply(f).startswith(b"250")
        assert _reply(f).startswith(b"354")
        smuggled = b"MAIL FROM:<evil@evil.test>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n"
        s.sendall(b"Subject: x\r\n\r\n" + b"e" * 4000 + ending + smuggled + b"f" * 3000 + b"\r\n.\r\n")
        reply = _reply(f)
        assert reply.startswith(b"554 5.5.2 Bare CR or LF"), reply
        s.sendall(b"QUIT\r\n")
        assert _reply(f).startswith(b"221")  # the smuggled commands were never run
