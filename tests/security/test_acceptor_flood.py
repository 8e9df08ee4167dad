"""Issue 11 item 1: a client must not be able to restart the SMTP acceptors.

The attack: thousands of `MAIL FROM:<a@x.test> X<random>=1`, each a distinct bad parameter.
The rejection reason once became a metrics label, so every command added a label value; the
acceptor's metrics snapshot grew past what its pipe to the parent takes at once, the send
failed on the non-blocking pipe, the parent took that for a dead child and the acceptor was
restarted, aborting every session on it (421 even mid-DATA).
"""

from __future__ import annotations

import re
import secrets
import smtplib
import socket
import time
from pathlib import Path

from tests.integration.test_acceptors import _children
from tests.support.platform import Platform, running_platform

_ATTACK_COMMANDS = 3000
_PER_CONNECTION = 9  # one below the default error limit (10): the session stays open to QUIT


def _read_until(s: socket.socket, ends: tuple[bytes, ...]) -> bytes:
    """Read replies until the last line received is a final line starting with one of `ends`."""
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return buf
        buf += chunk
        if buf.endswith(b"\r\n"):
            last = buf[:-2].rsplit(b"\r\n", 1)[-1]
            if last[:4] in ends:
                return buf


def _attack(addr: tuple[str, int], commands: int) -> None:
    """Distinct bad MAIL parameters, pipelined, over as few connections as the error limit
    allows (each connection: EHLO, then a burst of bad MAILs and QUIT in one write)."""
    sent = 0
    while sent < commands:
        burst = min(_PER_CONNECTION, commands - sent)
        lines = [
            f"MAIL FROM:<a@x.test> X{secrets.token_hex(12)}=1\r\n".encode() for _ in range(burst)
        ]
        lines.append(b"QUIT\r\n")
        with socket.create_connection(addr, timeout=10) as s:
            _read_until(s, (b"220 ",))
            s.sendall(b"EHLO attacker.test\r\n")  # RFC 2920: EHLO waits for its reply
            _read_until(s, (b"250 ",))
            s.sendall(b"".join(lines))
            _read_until(s, (b"221 ", b"421 "))
        sent += burst


def _rejection_labels(p: Platform) -> dict[str, float]:
    with p.api() as api:  # /metrics needs the API token
        r = api.get("/metrics")
    r.raise_for_status()
    text = r.text
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^mailcase_smtp_rejections_total\{reason="((?:[^"\\]|\\.)*)"\} (\S+)$', text, re.M
        )
    }


def _open_mid_data(addr: tuple[str, int], n: int) -> smtplib.SMTP:
    s = smtplib.SMTP(*addr, timeout=30)
    s.ehlo("legit.test")
    assert s.mail("sender@legit.test")[0] == 250
    assert s.rcpt("flood@example.test")[0] == 250
    assert s.docmd("DATA")[0] == 354
    s.send(f"Subject: legit {n}\r\n\r\nfirst half\r\n".encode())
    return s


def test_bad_mail_parameter_flood_restarts_no_acceptor_and_aborts_no_transfer(
    tmp_path: Path,
) -> None:
    # The error limits (test_probing.py) would end each attacking session after 20 refusals;
    # they are lifted here so that this test exercises the label and channel defects alone.
    env = {
        "MAILCASE_INBOUND__PROCESSES": "2",
        "MAILCASE_INBOUND__SOFT_ERROR_LIMIT": "1000000",
        "MAILCASE_INBOUND__HARD_ERROR_LIMIT": "1000000",
    }
    with running_platform(tmp_path, env=env) as p:
        p.cli("address", "add", "flood@example.test")
        assert p.proc is not None
        before = sorted(_children(p.proc.pid))
        assert len(before) == 2, before
        # Two transfers stand mid-DATA (the kernel gives connections to either acceptor; the
        # attack below reaches both through its many connections).
        legit = [_open_mid_data(p.smtp, n) for n in range(2)]
        _attack(p.smtp, _ATTACK_COMMANDS)
        # The acceptors send their metrics every second: wait until the parent has them all
        # (or an acceptor was restarted, which is the failure this test is for).
        deadline = time.monotonic() + 20
        while sum(_rejection_labels(p).values()) < _ATTACK_COMMANDS:
            if "exited unexpectedly" in p.log_text() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        replies = []
        for s in legit:
            try:
                s.send(b"second half\r\n.\r\n")
                replies.append(s.getreply())
                s.quit()
            except (OSError, smtplib.SMTPException) as e:  # the acceptor went away mid-DATA
                replies.append((0, repr(e).encode()))
        assert [code for code, _ in replies] == [250, 250], replies
        assert sorted(_children(p.proc.pid)) == before, "an acceptor was restarted"
        assert "exited unexpectedly" not in p.log_text()
        labels = _rejection_labels(p)
        # A closed set of reasons, however many distinct parameters the client sent.
        assert len(labels) <= 10, sorted(labels)[:20]
        assert labels.get("bad_mail_parameter") == _ATTACK_COMMANDS, labels
        assert not any("X" in label for label in labels), labels
