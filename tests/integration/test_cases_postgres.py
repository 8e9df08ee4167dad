"""Email-to-Case with the whole platform on PostgreSQL: cases, replies and threading."""

from __future__ import annotations

import json
import re
import smtplib
import time
from pathlib import Path

import pytest

from tests.support.platform import running_platform

pytestmark = pytest.mark.postgres


def _send(port: int, raw: bytes, rcpt: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        assert s.sendmail("dana@customer.test", rcpt, raw) == {}


def _wait_cases(p: object, n: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 30
    while True:
        rows = json.loads(p.cli("cases", "list", "--json").stdout)  # type: ignore[attr-defined]
        if len(rows) >= n or time.monotonic() > deadline:
            return rows  # type: ignore[no-any-return]
        time.sleep(0.2)


def test_cases_on_postgresql(tmp_path: Path, pg_fresh_url: str) -> None:
    env = {"MAILCASE_DATABASE__URL": pg_fresh_url, "MAILCASE_CASES__AUTHENTICATE": "false",
           "MAILCASE_INBOUND__PROCESSES": "1"}  # the cases, not the acceptors
    with running_platform(tmp_path, env=env) as p:
        p.cli("routing", "add", "support@example.test")
        p.cli("routing", "add", "help@example.test")
        first = (b"From: Dana <dana@customer.test>\r\nTo: support@example.test, help@example.test\r\n"
                 b"Subject: Printer jam\r\nMessage-ID: <pg-case-1@customer.test>\r\n\r\nIt jams.\r\n")
        _send(p.smtp_port, first, ["support@example.test", "help@example.test"])
        (case,) = _wait_cases(p, 1)
        assert (case["number"], case["subject"], case["supplied_email"]) == ("00000001", "Printer jam", "dana@customer.test")
        out = json.loads(p.cli("cases", "reply", "00000001", "--body", "Which tray?", "--json").stdout)
        token = re.search(r"thread::\S+::", out["subject"]).group(0)  # type: ignore[union-attr]
        answer = (f"From: Dana <dana@customer.test>\r\nTo: support@example.test\r\nSubject: tray 2\r\n"
                  f"Message-ID: <pg-case-2@customer.test>\r\nIn-Reply-To: {out['message_id']}\r\n\r\nTray 2.\r\n").encode()
        _send(p.smtp_port, answer, ["support@example.test"])
        by_token = (f"From: Dana <dana@customer.test>\r\nTo: support@example.test\r\nSubject: again [ {token} ]\r\n"
                    "Message-ID: <pg-case-3@customer.test>\r\n\r\nStill.\r\n").encode()
        _send(p.smtp_port, by_token, ["support@example.test"])
        _send(p.smtp_port, first, ["help@example.test"])  # the first one again: a duplicate
        new = (b"From: Eve <eve@other.test>\r\nTo: support@example.test\r\nSubject: Other\r\n"
               b"Message-ID: <pg-case-4@other.test>\r\n\r\nNew.\r\n")
        _send(p.smtp_port, new, ["support@example.test"])
        rows = _wait_cases(p, 2)
        assert [r["number"] for r in rows] == ["00000002", "00000001"]
        deadline = time.monotonic() + 30
        while True:
            shown = json.loads(p.cli("cases", "show", "00000001", "--json").stdout)
            if len(shown["emails"]) >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert [(e["direction"], e["subject"]) for e in shown["emails"]] == [
            ("inbound", "Printer jam"), ("outbound", out["subject"]), ("inbound", "tray 2"),
            ("inbound", f"again [ {token} ]"),
        ]
    assert not (tmp_path / "data" / "mailcase.db").exists()
