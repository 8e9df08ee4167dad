"""The daily case limit refuses at RCPT time once reached (no backscatter, no wasted DATA)."""

from __future__ import annotations

import json
import smtplib
import time
from pathlib import Path

import pytest

from tests.support.platform import running_platform


@pytest.mark.parametrize(("action", "code", "enhanced"), [("requeue", 451, b"4.7.1"), ("bounce", 550, b"5.7.1")])
def test_daily_case_limit_refuses_routing_addresses_at_rcpt(
    tmp_path: Path, action: str, code: int, enhanced: bytes
) -> None:
    env = {
        "MAILCASE_AUTOMATION__DAILY_CASE_LIMIT": "2",
        "MAILCASE_AUTOMATION__OVER_LIMIT_ACTION": action,
        "MAILCASE_INBOUND__PROCESSES": "1",
    }
    with running_platform(tmp_path, env=env) as p:
        p.cli("routing", "add", "cases@example.test", "--name", "Cases")
        p.cli("address", "add", "plain@example.test")
        for i in range(2):
            with smtplib.SMTP(*p.smtp, timeout=10) as s:
                s.sendmail(f"c{i}@sender.test", ["cases@example.test"],
                           f"From: c{i}@sender.test\r\nSubject: case {i}\r\nMessage-ID: <c{i}@sender.test>\r\n\r\nhelp {i}\r\n".encode())
        deadline = time.monotonic() + 20
        while len(json.loads(p.cli("cases", "list", "--json").stdout)) < 2:
            assert time.monotonic() < deadline, "two cases were not created"
            time.sleep(0.3)
        deadline = time.monotonic() + 10  # the gateway reads the count every second
        while True:
            with smtplib.SMTP(*p.smtp, timeout=10) as s:
                s.ehlo()
                s.mail("third@sender.test")
                reply = s.rcpt("cases@example.test")
                plain = s.rcpt("plain@example.test")
            if reply[0] == code:
                break
            assert time.monotonic() < deadline, reply
            time.sleep(0.3)
        assert enhanced in reply[1] and b"Daily case limit" in reply[1]
        assert plain[0] == 250  # receiving addresses that are not routing addresses still work
        log = json.loads(p.cli("log", "--json", "--address", "third@sender.test").stdout)
        refused = [e for e in log if e["rcpt_to"] == ["cases@example.test"]]
        assert refused and refused[0]["outcome"] == ("deferred" if code == 451 else "rejected"), log
        assert refused[0]["reply_code"] == code and "daily case limit" in refused[0]["reason"]
