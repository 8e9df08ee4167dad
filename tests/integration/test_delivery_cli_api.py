"""`mailcase send`, `outbound`, `relay` and the REST API against a running `mailcase serve`
that delivers to smtp-sink (real DNS server, real SMTP peer)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dnsserver import DNSServer
from tests.support.peers import needs
from tests.support.platform import Platform, running_platform
from tests.support.smtpsink import SmtpSink, smtp_sink_available

pytestmark = needs(smtp_sink_available())


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(dump=True) as s:
        yield s


@pytest.fixture(scope="module")
def dns() -> Iterator[DNSServer]:
    zone = {"example.net": {"MX": [(10, "mx.example.net")]},
            "mx.example.net": {"A": ["127.0.0.1"]},
            "dead.test": {"MX": [(10, "mx.dead.test")]}}
    with DNSServer(zone) as server:
        server.servfail("dead.test")  # its MX lookup fails: a transient route failure
        yield server


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, sink: SmtpSink, dns: DNSServer
             ) -> Iterator[Platform]:
    config = (
        f'[dns]\nnameservers = ["{dns.address}"]\ntimeout = 2.0\n'
        f"[delivery]\nmx_port = {sink.port}\npoll_interval = 0.2\nconnect_timeout = 3.0\n"
        f'tls_domains = {{"dead.test" = "off"}}\n'
        f"[inbound]\nprocesses = 1\n"
    )
    tmp = tmp_path_factory.mktemp("delivery-platform")
    with running_platform(tmp, config=config) as p:
        yield p


def _show(p: Platform, qid: str) -> dict[str, Any]:
    with p.api() as api:  # polling through the API: a CLI process per look is slow
        r = api.get(f"/api/v1/outbound/{qid}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def _wait_state(p: Platform, qid: str, state: str, limit: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        m = _show(p, qid)
        if m["state"] == state or time.monotonic() > deadline:
            return m
        time.sleep(0.2)


def test_send_from_the_command_line_is_delivered(platform: Platform, sink: SmtpSink,
                                                  tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("Grüße\nzweite Zeile\n.\nnach dem Punkt\n", encoding="utf-8")
    qid = platform.cli("send", "--from", "a@sender.test", "--to", "b@example.net",
                       "--subject", "Hallo Welt", "--body-file", str(body)).stdout.strip()
    assert _wait_state(platform, qid, "delivered")["state"] == "delivered"
    m = json.loads(platform.cli("outbound", "show", qid, "--json").stdout)
    assert m["state"] == "delivered", m
    assert m["category"] == "user" and m["source"] == "cli"
    (att,) = m["attempts"]
    assert att["result"] == "delivered" and att["remote_host"] == "mx.example.net"
    mid = m["message_id"]
    assert sink.message_ids()[mid] == 1
    listed = json.loads(platform.cli("outbound", "list", "--json").stdout)
    assert any(r["queue_id"] == qid and r["recipients"][0]["state"] == "delivered"
               for r in listed)
    text = platform.cli("outbound", "show", qid).stdout
    assert "delivered" in text and "mx.example.net" in text
    # The attempts once, as a table (they were also printed as a Python list of dicts).
    assert "{'" not in text and "[{" not in text
    assert text.count("attempts") == 1 and "attempts (1):" in text.splitlines()
    lines = text.splitlines()
    header = lines[lines.index("attempts (1):") + 1]
    assert header.split()[:4] == ["ATTEMPT", "STARTED_AT", "RECIPIENT", "RESULT"]
    log = platform.cli("log", "--queue-id", qid).stdout
    assert "delivered" in log and f"host=mx.example.net[127.0.0.1]:{sink.port}" in log
    # Issue 12.8: the email log's outbound columns, in the CLI's JSON and the API alike.
    (row,) = json.loads(platform.cli("log", "--queue-id", qid, "--json").stdout)
    with platform.api() as api:
        assert api.get("/api/v1/email-log", params={"queue_id": qid}).json() == [row]
        # Issue 12.10: an unknown outcome is an error naming the real ones, not "no entries".
        bad = api.get("/api/v1/email-log", params={"outcome": "sent"})
        assert bad.status_code == 422 and "one of accepted, rejected" in bad.json()["detail"]
    bad_cli = platform.cli("log", "--outcome", "sent", check=False)
    assert bad_cli.returncode == 2 and "'suppressed'" in bad_cli.stderr
    assert (row["remote_host"], row["remote_ip"], row["remote_port"]) == (
        "mx.example.net", "127.0.0.1", sink.port)
    assert (row["tls_mode"], row["tls_verified"], row["attempt"]) == ("preferred", False, 1)
    assert row["helo"] is None and row["client_ip"] is None and row["delay"] >= 0
    # The envelope sender as sent: the VERP return path, not the logical sender.
    assert row["mail_from"].startswith("bounce+") and row["mail_from"] != "a@sender.test"
    assert f"from=<{row['mail_from']}>" in log
    # a line with a lone dot did not end the message early (dot-stuffing on the wire)
    (tx,) = [t for t in sink.transactions() if mid.encode() in t]
    assert b"nach dem Punkt" in tx


def test_send_an_eml_file(platform: Platform, sink: SmtpSink, tmp_path: Path) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(b"From: a@sender.test\nTo: b@example.net\nSubject: eml\n"
                    b"Message-ID: <eml-1@sender.test>\n\nbody\n")
    qid = platform.cli("send", "--from", "a@sender.test", "--to", "b@example.net",
                       "--eml", str(eml)).stdout.strip()
    assert _wait_state(platform, qid, "delivered")["message_id"] == "<eml-1@sender.test>"
    assert sink.message_ids()["<eml-1@sender.test>"] == 1


def test_send_refuses_a_bad_address(platform: Platform) -> None:
    res = platform.cli("send", "--from", "a@sender.test", "--to", "not an address",
                       check=False)
    assert res.returncode != 0 and "not an address" in res.stderr


def test_api_send_validates_like_the_cli(platform: Platform) -> None:
    """Issue 12.3 through the API: the RFC 5322 minimum is added to an eml; what is no email
    is a 422 that says why."""
    with platform.api() as api:
        base = {"from": "a@sender.test", "to": ["c@example.net"]}
        r = api.post("/api/v1/outbound", json=base | {"eml": "Subject: only a subject\n\nhi\n"})
        assert r.status_code == 201, r.text
        shown = api.get(f"/api/v1/outbound/{r.json()['queue_id']}").json()
        assert shown["message_id"] and shown["message_id"].endswith("@sender.test>")
        for bad, says in (({"eml": "just some text\n"}, "not an RFC 5322 message"),
                          ({"eml": "From: nobody\nSubject: x\n\nb\n"}, "no usable address"),
                          ({"subject": " ", "text": ""}, "nothing to send")):
            r = api.post("/api/v1/outbound", json=base | bad)
            assert r.status_code == 422 and says in r.json()["detail"], (bad, r.text)


def test_api_queue_show_retry_and_email_log(platform: Platform, sink: SmtpSink) -> None:
    with platform.api() as api:
        r = api.post("/api/v1/outbound", json={"from": "a@sender.test", "to": ["c@example.net"],
                                               "subject": "via API", "text": "hi"})
        assert r.status_code == 201, r.text
        qid = r.json()["queue_id"]
        m = _wait_state(platform, qid, "delivered")
        assert m["state"] == "delivered"
        listed = api.get("/api/v1/outbound").json()
        assert qid in [x["queue_id"] for x in listed]
        one = api.get(f"/api/v1/outbound/{qid}").json()
        assert one["attempts"][0]["result"] == "delivered"
        assert api.get("/api/v1/outbound/NOPE").status_code == 404
        log = api.get("/api/v1/email-log", params={"queue_id": qid}).json()
        assert [(x["direction"], x["outcome"]) for x in log] == [("outbound", "delivered")]
        assert api.post("/api/v1/outbound", json={"from": "a@sender.test", "to": ["bad"]}
                        ).status_code == 422
        # A message whose MX lookup fails is deferred; retry makes it due now.
        r = api.post("/api/v1/outbound", json={"from": "a@sender.test", "to": ["x@dead.test"],
                                               "text": "x"})
        dead = r.json()["queue_id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not _show(platform, dead)["attempts"]:
            time.sleep(0.2)
        time.sleep(0.5)
        m = _show(platform, dead)
        assert m["state"] == "queued" and m["recipients"][0]["state"] == "deferred", m
        assert m["recipients"][0]["last_stage"] == "route"
        assert api.post(f"/api/v1/outbound/{dead}/retry").status_code == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(_show(platform, dead)["attempts"]) < 2:
            time.sleep(0.2)
        assert len(_show(platform, dead)["attempts"]) >= 2
        assert "due now" in platform.cli("outbound", "retry", dead).stdout
        assert api.post("/api/v1/outbound/NOPE/retry").status_code == 404
        assert platform.cli("outbound", "retry", "NOPE", check=False).returncode != 0


def test_relays_and_filters_by_cli_and_api(platform: Platform) -> None:
    out = platform.cli("relay", "add", "smart", "--host", "relay.example.com", "--port", "587",
                       "--auth", "PLAIN", "--username", "u", "--password-stdin",
                       input="hunter2\n").stdout
    assert "required_verify" in out
    listed = json.loads(platform.cli("relay", "list", "--json").stdout)
    assert [r["name"] for r in listed] == ["smart"] and listed[0]["tls_mode"] == "required_verify"
    assert "hunter2" not in platform.cli("relay", "list", "--json").stdout
    assert "hunter2" not in platform.cli("relay", "list").stdout
    platform.cli("relay", "filter", "add", "--relay", "smart", "--recipient", "*.corp.test",
                 "--priority", "5")
    filters = json.loads(platform.cli("relay", "filter", "list", "--json").stdout)
    assert filters[0]["recipient_pattern"] == "*.corp.test" and filters[0]["relay"] == "smart"
    bad = platform.cli("relay", "filter", "add", "--relay", "nope", check=False)
    assert bad.returncode != 0 and "no relay" in bad.stderr
    # Issue 12.6: a second filter at a taken priority is refused (CLI and API), clearly.
    dup = platform.cli("relay", "filter", "add", "--relay", "smart", "--recipient", "x.test",
                       "--priority", "5", check=False)
    assert dup.returncode == 1 and "priority 5 is taken by filter" in dup.stderr
    with platform.api() as api:
        r = api.post("/api/v1/relay-filters", json={"relay": "smart", "priority": 5})
        assert r.status_code == 422 and "priority 5 is taken" in r.json()["detail"]
    assert len(json.loads(platform.cli("relay", "filter", "list", "--json").stdout)) == 1
    with platform.api() as api:
        r = api.post("/api/v1/relays", json={"name": "api-relay", "host": "mx:relay.test",
                                             "port": 465, "tls_mode": "required",
                                             "auth_mechanism": "LOGIN", "username": "v",
                                             "password": "pw-secret"})
        assert r.status_code == 201, r.text
        assert "password" not in r.json() and r.json()["tls_mode"] == "required_verify"
        assert "pw-secret" not in api.get("/api/v1/relays").text
        assert api.post("/api/v1/relays", json={"name": "api-relay", "host": "x.test"}
                        ).status_code == 409
        f = api.post("/api/v1/relay-filters", json={"relay": "api-relay",
                                                    "sender_pattern": "sender.test"})
        assert f.status_code == 201, f.text
        assert len(api.get("/api/v1/relay-filters").json()) == 2
        assert api.delete(f"/api/v1/relay-filters/{f.json()['id']}").status_code == 204
        assert api.delete("/api/v1/relays/api-relay").status_code == 204
        assert api.get("/api/v1/relays/api-relay").status_code == 404
    platform.cli("relay", "filter", "remove", str(filters[0]["id"]))
    platform.cli("relay", "remove", "smart")
    assert platform.cli("relay", "list").stdout.strip() == "(none)"
