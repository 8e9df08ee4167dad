"""Slowloris: clients that drip bytes to hold connections open (issue 11, item 5).

The idle deadline used to move with every byte, so a client sending one octet a second with no
newline stayed connected far past `command_timeout`; about 20 addresses (50 connections each)
kept the gateway full. BDAT chunks restarted the data-rate clock, so small slow chunks did the
same inside a message. Timeouts are configured small here; each drip is bounded in time.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.platform import Platform, running_platform

_BOUND = 15.0  # seconds a drip may go on before the test gives up on being cut off


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    env = {
        "MAILCASE_INBOUND__COMMAND_TIMEOUT": "2",
        "MAILCASE_INBOUND__DATA_TIMEOUT": "2",
        "MAILCASE_INBOUND__MIN_DATA_RATE": "500",
    }
    with running_platform(tmp_path_factory.mktemp("slowloris"), env=env) as p:
        p.cli("address", "add", "support@example.test")
        yield p


def _connect(p: Platform) -> socket.socket:
    s = socket.create_connection(p.smtp, timeout=10)
    assert s.recv(1024).startswith(b"220")
    return s


def _rest(s: socket.socket) -> bytes:
    """What the server sent before it closed (a send may fail first: EPIPE after its close)."""
    s.settimeout(2)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except OSError:
        pass
    return data


def _drip(s: socket.socket, data: bytes, interval: float = 0.3) -> bytes:
    """Send `data` an octet at a time (cycling) until the server closes or _BOUND passes;
    return what the server sent. Never pauses longer than `interval`, so a server that only
    notices silence cannot pass."""
    got = b""
    s.settimeout(interval)
    end = time.monotonic() + _BOUND
    i = 0
    while time.monotonic() < end:
        try:
            s.sendall(data[i % len(data) : i % len(data) + 1])
        except OSError:
            return got + _rest(s)  # closed by the server
        i += 1
        try:
            chunk = s.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return got


def _ehlo(s: socket.socket) -> None:
    s.sendall(b"EHLO drip.test\r\n")
    buf = b""
    while b"250 " not in buf:
        buf += s.recv(4096)


def test_a_command_dripped_without_newline_is_timed_out(strict: Platform) -> None:
    """A command line must arrive whole within command_timeout, however steadily it drips."""
    with _connect(strict) as s:
        got = _drip(s, b"EHLO drip.test")
    assert got.startswith(b"421 4.4.2"), got


def test_a_command_dripped_after_ehlo_is_timed_out(strict: Platform) -> None:
    with _connect(strict) as s:
        _ehlo(s)
        got = _drip(s, b"MAIL FROM:<slow@sender.test>")
    assert got.startswith(b"421 4.4.2"), got


def test_small_slow_bdat_chunks_do_not_restart_the_rate_clock(strict: Platform) -> None:
    """Each BDAT chunk used to start a fresh data-rate window: chunks of a few octets, each
    sent within data_timeout, kept a transaction open forever."""
    with _connect(strict) as s:
        _ehlo(s)
        s.sendall(b"MAIL FROM:<slow@sender.test>\r\n")
        assert s.recv(4096).startswith(b"250")
        s.sendall(b"RCPT TO:<support@example.test>\r\n")
        assert s.recv(4096).startswith(b"250")
        got = b""
        s.settimeout(0.3)
        end = time.monotonic() + _BOUND
        closed = False
        while time.monotonic() < end and not closed:
            try:
                s.sendall(b"BDAT 3\r\n")
                for octet in (b"a", b"b", b"c"):
                    time.sleep(0.3)
                    s.sendall(octet)
            except OSError:
                got += _rest(s)  # closed by the server
                break
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                try:
                    chunk = s.recv(4096)
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                got += chunk
                if got.endswith(b"\r\n"):
                    break
    assert b"421 4.4.2" in got, got


def test_a_client_typing_slowly_but_within_the_timeout_is_served(tmp_path: Path) -> None:
    """Guard against over-tightening: a command may take its time as long as it is whole
    within command_timeout (no slowloris regression of its own: it passed before the fix)."""
    env = {"MAILCASE_INBOUND__COMMAND_TIMEOUT": "30"}
    with running_platform(tmp_path, env=env) as p, _connect(p) as s:
        for octet in b"NOOP\r\n":
            time.sleep(0.2)
            s.sendall(bytes([octet]))
        assert s.recv(4096).startswith(b"250")
