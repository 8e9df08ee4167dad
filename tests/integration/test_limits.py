"""Slow, silent, chatty, early and huge clients against a real server; a full disk."""

from __future__ import annotations

import json
import os
import smtplib
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.platform import running_platform


def _recv_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk
    except TimeoutError:
        return data


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory):
    env = {
        "MAILCASE_INBOUND__COMMAND_TIMEOUT": "1",
        "MAILCASE_INBOUND__DATA_TIMEOUT": "1",
        "MAILCASE_INBOUND__MIN_DATA_RATE": "2000",
        "MAILCASE_INBOUND__MAX_ERRORS": "3",
    }
    with running_platform(tmp_path_factory.mktemp("strict"), env=env) as p:
        p.cli("address", "add", "support@example.test")
        yield p


def test_idle_client_gets_421_after_command_timeout(strict) -> None:
    with socket.create_connection(strict.smtp, timeout=10) as s:
        assert s.recv(1024).startswith(b"220")
        start = time.monotonic()
        data = _recv_until_closed(s, 10)
        assert data.startswith(b"421 4.4.2"), data
        assert 0.8 < time.monotonic() - start < 5


def test_a_client_that_keeps_talking_is_not_timed_out(strict) -> None:
    """The idle deadline moves with every command: NOOPs every 0.3 s for three command
    timeouts keep the session open (the timer re-arms lazily, so this is what can break)."""
    with socket.create_connection(strict.smtp, timeout=10) as s:
        assert s.recv(1024).startswith(b"220")
        s.sendall(b"EHLO busy.test\r\n")
        assert s.recv(4096).startswith(b"250")
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            time.sleep(0.3)
            s.sendall(b"NOOP\r\n")
            assert s.recv(4096).startswith(b"250"), "cut off while active"
        data = _recv_until_closed(s, 10)  # then idle: cut off after one timeout
        assert data.startswith(b"421 4.4.2"), data


def test_client_below_minimum_data_rate_is_cut_off(strict) -> None:
    with socket.create_connection(strict.smtp, timeout=10) as s:
        s.recv(1024)
        s.sendall(b"EHLO slow.test\r\n")
        time.sleep(0.2)
        s.recv(4096)
        s.sendall(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n")
        time.sleep(0.2)
        assert b"354" in s.recv(4096)
        got = b""
        deadline = time.monotonic() + 8
        s.settimeout(0.3)
        while time.monotonic() < deadline:
            try:
                s.sendall(b"slow line\r\n")
            except OSError:
                break
            try:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            except TimeoutError:
                pass
            except ConnectionResetError:
                break
        assert b"421 4.4.2" in got, got


def test_too_many_errors_disconnects(strict) -> None:
    with socket.create_connection(strict.smtp, timeout=10) as s:
        s.recv(1024)
        s.sendall(b"FOO\r\nBAR\r\nBAZ\r\nQUX\r\n")
        data = _recv_until_closed(s, 5)
        assert data.count(b"500 5.5.2") == 3
        assert b"421 4.7.0" in data


def test_talking_before_the_greeting_is_refused(tmp_path: Path) -> None:
    with running_platform(tmp_path, env={"MAILCASE_INBOUND__GREETING_DELAY": "0.5"}) as p:
        with socket.create_connection(p.smtp, timeout=10) as s:
            s.sendall(b"EHLO eager.test\r\n")
            data = _recv_until_closed(s, 5)
            assert b"554 5.5.0" in data and b"220" not in data.split(b"554")[0]
        with smtplib.SMTP(*p.smtp, timeout=10) as polite:
            assert polite.ehlo("polite.test")[0] == 250


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_big_message_is_not_held_in_memory_several_times(tmp_path: Path) -> None:
    size = 30 * 1024 * 1024
    with running_platform(tmp_path, env={"MAILCASE_LOG__MAILLOG": "none"}) as p:
        p.cli("address", "add", "big@example.test")
        with smtplib.SMTP(*p.smtp, timeout=60) as s:  # warm up every code path once
            s.sendmail("a@sender.test", ["big@example.test"], b"Subject: small\r\n\r\nx\r\n")
        time.sleep(1)
        assert p.proc is not None
        before = _vm_hwm(p.proc.pid)
        line = b"y" * 998 + b"\r\n"
        body = b"Subject: big\r\nMessage-ID: <big@sender.test>\r\n\r\n" + line * (size // len(line))
        with smtplib.SMTP(*p.smtp, timeout=120) as s:
            assert s.sendmail("a@sender.test", ["big@example.test"], body) == {}
        deadline = time.monotonic() + 60
        while json.loads(p.cli("messages", "list", "--json").stdout)[0]["state"] != "processed":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        grown = _vm_hwm(p.proc.pid) - before
    # Receiving, storing and processing a 30 MiB message: one copy in memory (measured 1.12×);
    # binding it to SQLite would add two more.
    assert grown < 2 * size, f"peak memory grew by {grown / size:.1f}× the message size"
    print(f"\npeak memory growth for a 30 MiB message: {grown / size:.2f}× its size")


def test_full_disk_answers_451_and_recovers(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {r.stderr.strip()}")
    try:
        with running_platform(mnt, env={"MAILCASE_LOG__MAILLOG": "none"}) as p:
            p.cli("address", "add", "full@example.test")
            filler = mnt / "filler"
            free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
            with open(filler, "wb") as f:
                f.write(b"\0" * max(0, free - 3 * 1024 * 1024))
            line = b"z" * 998 + b"\r\n"
            acked, codes = [], []
            with smtplib.SMTP(*p.smtp, timeout=60) as s:
                for i in range(12):
                    mid = f"<full-{i}-{uuid.uuid4()}@sender.test>"
                    body = f"Message-ID: {mid}\r\nSubject: fill\r\n\r\n".encode() + line * 512
                    try:
                        s.sendmail("a@sender.test", ["full@example.test"], body)
                        acked.append(mid)
                        codes.append(250)
                    except smtplib.SMTPDataError as e:
                        codes.append(e.smtp_code)
                        assert e.smtp_code == 451 and b"4.3.0" in e.smtp_error
                        break
            assert 451 in codes, f"the disk never filled: {codes}"
            filler.unlink()
            with smtplib.SMTP(*p.smtp, timeout=60) as s:
                assert s.sendmail("a@sender.test", ["full@example.test"], b"Message-ID: <after@sender.test>\r\n\r\nok\r\n") == {}
            stored = {m["message_id"] for m in json.loads(p.cli("messages", "list", "--json").stdout)}
            assert set(acked) <= stored and "<after@sender.test>" in stored
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
