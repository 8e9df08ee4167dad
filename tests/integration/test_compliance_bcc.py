"""Issue 12 item 1: every path that enqueues mail, from every process, adds the compliance BCC.

The archive copy once depended on which modules the enqueuing process had imported:
`mailcase send --category system` without `--config` went out without it. Here each way in is
used the way an operator or agent uses it, and each queued message must list the archive
address among its recipients:

- `mailcase send` with `--config`, and without it (the same file named by `MAILCASE_CONFIG`);
- `mailcase send --category system` (the password-reset class);
- the REST API's `POST /api/v1/outbound`;
- a case reply, from the CLI and from the API;
- an auto-response sent by the server's pipeline (another process than the CLI's).

The server runs without the delivery role: what is checked is the queue, not a remote MTA.
"""

from __future__ import annotations

import json
import smtplib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import forkserver
from tests.support.dnsserver import DNSServer
from tests.support.platform import Platform, running_platform

ARCHIVE = "archive@vault.test"
WAIT = 30.0


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("bcc")
    with DNSServer({}) as dns, running_platform(tmp, config="", start=False) as p:
        assert p.config_path is not None
        p.config_path.write_text(
            '[server]\nhostname = "mx.example.test"\n'
            f'[dns]\nnameservers = ["{dns.address}"]\ntimeout = 2.0\n'
            "[pipeline]\npoll_interval = 0.2\n"
            "[inbound]\nprocesses = 1\n"
            f'[dkim]\ncompliance_bcc = ["{ARCHIVE}"]\n'
        )
        p.extra_args = ["--roles", "smtp,pipeline,web"]
        p.start()
        p.cli("routing", "add", "support@example.test", "--name", "Support")
        yield p


def _recipients(p: Platform, queue_id: str) -> list[str]:
    shown = json.loads(p.cli("outbound", "show", queue_id, "--json").stdout)
    return [r["address"] for r in shown["recipients"]]


def _send_args(*extra: str) -> list[str]:
    return ["send", "--from", "support@example.test", "--to", "someone@customer.test",
            "--subject", "hello", *extra]


def test_cli_send_with_config(mc: Platform, tmp_path: Any) -> None:
    body = tmp_path / "body.txt"
    body.write_text("text\n")
    qid = mc.cli(*_send_args("--body-file", str(body))).stdout.strip()
    assert _recipients(mc, qid) == ["someone@customer.test", ARCHIVE]


@pytest.mark.parametrize("category", ["system", "user"])
def test_cli_send_without_config_option(mc: Platform, tmp_path: Any, category: str) -> None:
    """The configuration named by MAILCASE_CONFIG, no --config: the same archive copy."""
    assert mc.config_path is not None
    body = tmp_path / "body.txt"
    body.write_text("your reset link\n")
    env = dict(mc.env, MAILCASE_CONFIG=str(mc.config_path))
    res = forkserver.run(["--data-dir", str(mc.data_dir),
                          *_send_args("--category", category, "--body-file", str(body))],
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert _recipients(mc, res.stdout.strip().splitlines()[-1]) == [
        "someone@customer.test", ARCHIVE]


def test_api_send(mc: Platform) -> None:
    with mc.api() as api:
        r = api.post("/api/v1/outbound", json={
            "from": "support@example.test", "to": ["someone@customer.test"],
            "subject": "from the API", "text": "hello", "category": "system"})
        assert r.status_code == 201, r.text
        qid = r.json()["queue_id"]
        shown = api.get(f"/api/v1/outbound/{qid}").json()
    assert [x["address"] for x in shown["recipients"]] == ["someone@customer.test", ARCHIVE]


def _deliver(p: Platform, subject: str) -> str:
    raw = (f"From: Dana <dana@customer.test>\r\nTo: support@example.test\r\n"
           f"Subject: {subject}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
           f"Message-ID: <{time.monotonic_ns()}@customer.test>\r\n\r\nHelp please.\r\n").encode()
    with smtplib.SMTP(*p.smtp, timeout=15) as s:
        assert s.sendmail("dana@customer.test", ["support@example.test"], raw) == {}
    return subject


def _case_for(p: Platform, subject: str) -> str:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for c in json.loads(p.cli("cases", "list", "--json").stdout):
            if c["subject"] == subject:
                return str(c["number"])
        time.sleep(0.2)
    raise AssertionError(f"no case for {subject!r} within {WAIT}s")


def test_case_replies_from_cli_and_api(mc: Platform) -> None:
    number = _case_for(mc, _deliver(mc, "printer on fire"))
    out = json.loads(mc.cli("cases", "reply", number, "--body", "On our way.", "--json").stdout)
    assert _recipients(mc, out["outbound_queue_id"]) == ["dana@customer.test", ARCHIVE]
    with mc.api() as api:
        r = api.post(f"/api/v1/cases/{number}/emails", json={"body": "Fixed?"})
        assert r.status_code == 201, r.text
        qid = r.json()["outbound_queue_id"]
    assert _recipients(mc, qid) == ["dana@customer.test", ARCHIVE]


def test_auto_response_from_the_server_pipeline(mc: Platform) -> None:
    mc.cli("autoresponse", "add", "ack", "--body", "We got case {{ case_number }}.",
           "--routing-address", "support@example.test")
    number = _case_for(mc, _deliver(mc, "auto-response wanted"))
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        auto = [m for m in json.loads(mc.cli("outbound", "list", "--json").stdout)
                if m["category"] == "auto"]
        if auto:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no auto-response queued for case {number} within {WAIT}s")
    assert [r["address"] for r in auto[0]["recipients"]] == ["dana@customer.test", ARCHIVE]
