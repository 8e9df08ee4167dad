"""Unknown-recipient probing (issue 11, item 7).

One connection used to get 10 000 550s in 3.3 s, and each was an email-log row. Now refused
recipients count as errors (Postfix smtpd_soft/hard_error_limit): replies slow down past the
soft limit, the session ends with 421 4.7.0 at the hard limit, and past `rejection_log_limit`
rejections are summarised in one email-log entry per reason at the end of the session.
"""

from __future__ import annotations

import json
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.platform import Platform, running_platform


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    # A short error delay keeps the test quick; the limits are the defaults (10 and 20).
    env = {"MAILCASE_INBOUND__ERROR_SLEEP_TIME": "0.05", "MAILCASE_LOG__MAILLOG": "none"}
    with running_platform(tmp_path_factory.mktemp("probing"), env=env) as p:
        p.cli("address", "add", "support@example.test")
        yield p


def _read_reply(f: Any) -> bytes:
    """One whole (possibly multi-line) reply, or b"" at EOF."""
    out = b""
    while line := f.readline():
        out += line
        if line[3:4] != b"-":
            break
    return out


def _rows(p: Platform, address: str | None = None) -> list[dict[str, Any]]:
    args = ["log", "--json", "--outcome", "rejected", "--limit", "100000"]
    if address is not None:
        args += ["--address", address]
    return list(json.loads(p.cli(*args).stdout))


def test_a_prober_is_disconnected_at_the_hard_error_limit(gateway: Platform) -> None:
    replies = []
    with socket.create_connection(gateway.smtp, timeout=30) as s, s.makefile("rb") as f:
        assert _read_reply(f).startswith(b"220")
        s.sendall(b"EHLO probe.test\r\n")
        assert _read_reply(f).startswith(b"250")
        s.sendall(b"MAIL FROM:<probe@probe.test>\r\n")
        assert _read_reply(f).startswith(b"250")
        for i in range(200):  # bounded: the old code answered all 200
            try:
                s.sendall(f"RCPT TO:<guess{i}@example.test>\r\n".encode())
                reply = _read_reply(f)
            except OSError:  # reset: the server closed (the 421 was read before)
                break
            if not reply:
                break
            replies.append(reply)
            if reply.startswith(b"421"):
                break
    assert [r[:9] for r in replies[:19]] == [b"550 5.1.1"] * 19
    assert replies[19].startswith(b"550 5.1.1") and b"421 4.7.0" in replies[19] + b"".join(
        replies[20:]
    ), replies[18:]
    assert len(replies) <= 21


def test_a_probing_flood_writes_a_bounded_number_of_log_rows(tmp_path: Path) -> None:
    env = {
        # Limits out of the way, so that only the log aggregation is tested.
        "MAILCASE_INBOUND__SOFT_ERROR_LIMIT": "100000",
        "MAILCASE_INBOUND__HARD_ERROR_LIMIT": "100000",
        "MAILCASE_LOG__MAILLOG": "none",
    }
    with running_platform(tmp_path, env=env) as p:
        p.cli("address", "add", "support@example.test")
        with socket.create_connection(p.smtp, timeout=30) as s, s.makefile("rb") as f:
            assert _read_reply(f).startswith(b"220")
            s.sendall(b"EHLO flood.test\r\n")
            assert _read_reply(f).startswith(b"250")
            s.sendall(b"MAIL FROM:<flood@flood.test>\r\n")
            assert _read_reply(f).startswith(b"250")
            for batch in range(10):  # 1 000 probes, pipelined 100 at a time
                s.sendall(b"".join(
                    f"RCPT TO:<guess{batch}-{i}@example.test>\r\n".encode() for i in range(100)
                ))
                for _ in range(100):
                    assert _read_reply(f).startswith(b"550 5.1.1")
            s.sendall(b"QUIT\r\n")
            assert _read_reply(f).startswith(b"221")
        deadline = time.monotonic() + 30
        rows = _rows(p)
        while not any("summarised" in r["reason"] for r in rows) and time.monotonic() < deadline:
            time.sleep(0.5)
            rows = _rows(p)
        assert 1 <= len(rows) <= 12, f"{len(rows)} email-log rows for one probing session"
        summary = [r for r in rows if "summarised" in r["reason"]]
        assert len(summary) == 1 and "990 more" in summary[0]["reason"], summary
        assert summary[0]["client_ip"] == "127.0.0.1" and summary[0]["reply_code"] == 550
        assert len(summary[0]["rcpt_to"]) == 5  # samples of what was probed


def test_a_sender_with_a_few_wrong_addresses_is_unaffected(gateway: Platform) -> None:
    """Guard against over-reach: a few mistakes cost nothing and stay logged one by one."""
    wrong = [f"old{i}@example.test" for i in range(3)]
    body = b"Subject: hello\r\nMessage-ID: <few-mistakes@sender.test>\r\n\r\nhi\r\n"
    with smtplib.SMTP(*gateway.smtp, timeout=30) as c:
        refused = c.sendmail("customer@sender.test", [*wrong, "support@example.test"], body)
        assert set(refused) == set(wrong)
        assert c.noop()[0] == 250  # still connected, still served
    for address in wrong:
        deadline = time.monotonic() + 30
        while not (rows := _rows(gateway, address)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(rows) == 1 and rows[0]["reason"] == "RCPT: unknown recipient", rows


def test_past_the_soft_limit_replies_wait_without_holding_up_other_clients(
    tmp_path: Path,
) -> None:
    """The error delay is the prober's alone: while its reply is held back (a delay far
    longer than the test), another client is served from greeting to queued message."""
    env = {
        "MAILCASE_INBOUND__SOFT_ERROR_LIMIT": "2",
        "MAILCASE_INBOUND__ERROR_SLEEP_TIME": "60",
        "MAILCASE_INBOUND__PROCESSES": "1",  # one event loop: a blocking sleep would stall it
        "MAILCASE_LOG__MAILLOG": "none",
    }
    with running_platform(tmp_path, env=env) as p:
        p.cli("address", "add", "support@example.test")
        with socket.create_connection(p.smtp, timeout=30) as s, s.makefile("rb") as f:
            assert _read_reply(f).startswith(b"220")
            s.sendall(b"EHLO probe.test\r\n")
            assert _read_reply(f).startswith(b"250")
            s.sendall(b"MAIL FROM:<probe@probe.test>\r\n")
            assert _read_reply(f).startswith(b"250")
            for i in range(2):  # up to the soft limit: answered at once
                s.sendall(f"RCPT TO:<guess{i}@example.test>\r\n".encode())
                assert _read_reply(f).startswith(b"550 5.1.1")
            s.sendall(b"RCPT TO:<guess2@example.test>\r\n")  # past it: held back
            with smtplib.SMTP(*p.smtp, timeout=30) as other:
                body = b"Subject: meanwhile\r\n\r\nserved\r\n"
                assert other.sendmail("a@sender.test", ["support@example.test"], body) == {}
            s.settimeout(0.5)
            with pytest.raises(TimeoutError):
                s.recv(4096)  # the prober's third 550 is still waiting
