"""Issue 4 end to end: a case reply that bounces permanently shows as bounced on the case email.

A real `mailcase serve` with a local DNS server: the customer's reply address is at a domain
with a null MX (RFC 7505, ``MX 0 .``), so the delivery engine gives up at once with a 5.1.10.
The reply, read back through GET /api/v1/cases/{number}/emails and `mailcase cases show`
(text and --json), carries that outcome in its `delivery`.
"""

from __future__ import annotations

import json
import re
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dnsserver import DNSServer
from tests.support.platform import free_port, running_platform

WAIT = 20.0  # seconds for the case to appear and for the reply to bounce (bounded polling)

ZONE = {
    "nomail.test": {"MX": [(0, ".")]},  # null MX: accepts no mail
    "good.example": {"TXT": ["v=spf1 ip4:127.0.0.0/8 -all"]},
}


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    with DNSServer(ZONE) as server:
        yield server


def _wait(what: str, fn: Any) -> Any:
    deadline = time.monotonic() + WAIT
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {WAIT}s (last: {last!r})")


def test_reply_to_null_mx_shows_bounced_on_the_case(tmp_path: Path, dns: DNSServer) -> None:
    config = (
        '[server]\nhostname = "mx.mailcase.test"\n'
        f'[dns]\nnameservers = ["{dns.address}"]\ntimeout = 2.0\n'
        "[pipeline]\npoll_interval = 0.05\n"
        f"[delivery]\nmx_port = {free_port()}\npoll_interval = 0.05\nconnect_timeout = 3.0\n"
        "[inbound]\nprocesses = 1\n"  # the case's delivery status, not the acceptors
    )
    with running_platform(tmp_path, config=config) as p, p.api() as api:
        p.cli("routing", "add", "support@example.test", "--name", "Support")
        raw = (
            b"From: Ann <ann@good.example>\r\nTo: support@example.test\r\n"
            b"Subject: Where is my parcel\r\nMessage-ID: <parcel-1@good.example>\r\n"
            b"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\nIt did not arrive.\r\n"
        )
        with smtplib.SMTP(*p.smtp, timeout=15) as s:
            s.sendmail("ann@good.example", ["support@example.test"], raw)
        cases = _wait("case creation",
                      lambda: api.get("/api/v1/cases").json())
        number = cases[0]["number"]

        res = api.post(f"/api/v1/cases/{number}/emails",
                       json={"body": "Please check the address.", "to": ["ann@nomail.test"]})
        assert res.status_code == 201, res.text
        queue_id = res.json()["outbound_queue_id"]

        def bounced() -> dict[str, Any] | None:
            emails = api.get(f"/api/v1/cases/{number}/emails").json()
            out = [e for e in emails if e["direction"] == "outbound"]
            assert len(out) == 1 and out[0]["delivery"] is not None, emails
            d: dict[str, Any] = out[0]["delivery"]
            return d if d["state"] == "bounced" else None

        d = _wait("the bounce", bounced)
        assert d["queue_id"] == queue_id and d["bounced_at"] and d["delivered_at"] is None
        (rc,) = d["recipients"]
        assert (rc["address"], rc["state"], rc["last_stage"], rc["last_reply_code"]) == (
            "ann@nomail.test", "bounced", "route", 556), rc
        assert "5.1.10" in rc["last_reply"] and "null MX" in rc["last_reply"]
        inbound = [e for e in api.get(f"/api/v1/cases/{number}/emails").json()
                   if e["direction"] == "inbound"]
        assert len(inbound) == 1 and "delivery" not in inbound[0]

        text = p.cli("cases", "show", number).stdout
        assert re.search(rf"Delivery: bounced \(queue {re.escape(queue_id)}, ", text), text
        assert "ann@nomail.test: bounced at route" in text and "556 5.1.10" in text
        shown = json.loads(p.cli("cases", "show", number, "--json").stdout)
        (reply,) = [e for e in shown["emails"] if e["direction"] == "outbound"]
        assert reply["delivery"]["state"] == "bounced"
        assert reply["delivery"]["recipients"][0]["state"] == "bounced"
        # The email log has it too (the part of issue 4 that already worked).
        log = api.get("/api/v1/email-log", params={"queue_id": queue_id}).json()
        assert any(e["outcome"] == "bounced" for e in log), log


