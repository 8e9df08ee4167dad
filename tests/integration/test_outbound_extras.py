"""DKIM, VERP bounces, DSNs and the compliance BCC on a real `mailcase serve`.

One instance plays both ends: its delivery engine sends to MX hosts that the local DNS server
points at the instance's own SMTP port (`delivery.mx_port`), so what leaves comes back in
through the real listener, pipeline and parser:

- mail to a served address arrives DKIM-signed (verified here with dkimpy) from its VERP
  return path, and a copy goes to the compliance BCC address;
- mail to an unknown address is refused at RCPT (550 5.1.1): the address is suppressed and a
  DSN (MAIL FROM:<>) comes back to the sender;
- a DSN sent by "a remote MTA" to a VERP address marks the recipient bounced (CLI, API,
  email log); an altered VERP address is refused at RCPT; a suppressed address gets nothing
  until cleared.
"""

from __future__ import annotations

import json
import smtplib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dkim as dkimpy
import pytest

from mailcase.dns import Resolver
from mailcase.mime import parse_message
from tests.support.dnsserver import DNSServer
from tests.support.platform import Platform, running_platform

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eml"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 45.0) -> T:
    """Poll `probe` (at most `timeout` seconds, 0.2 s apart) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def dns() -> Iterator[DNSServer]:
    zone = {
        "example.test": {"MX": [(10, "mx.example.test")], "TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
        "mx.example.test": {"A": ["127.0.0.1"]},
    }
    with DNSServer(zone) as server:
        yield server


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory, dns: DNSServer) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("extras")
    with running_platform(tmp, config="", start=False) as p:
        assert p.config_path is not None
        p.config_path.write_text(
            '[server]\nhostname = "mx.example.test"\n'
            f'[dns]\nnameservers = ["{dns.address}"]\ntimeout = 3.0\n'
            f"[delivery]\nmx_port = {p.smtp_port}\npoll_interval = 0.2\n"
            '[dkim]\ncompliance_bcc = ["archive@example.test"]\n'
            "[inbound]\nprocesses = 1\n"  # outbound extras, not the acceptors
        )
        p.start()
        for a in ("support@example.test", "info@example.test", "archive@example.test"):
            p.cli("address", "add", a)
        yield p


def _inbound(p: Platform) -> list[dict[str, Any]]:
    return json.loads(p.cli("messages", "list", "--json", "--limit", "1000").stdout)  # type: ignore[no-any-return]


def _raw(p: Platform, queue_id: str) -> bytes:
    from tests.support import forkserver

    cmd = ["--config", str(p.config_path), "--data-dir", str(p.data_dir),
           "messages", "show", "--raw", queue_id]
    res = forkserver.run_binary(cmd, env=p.env, timeout=60)
    res.check_returncode()
    return res.stdout


def _send(p: Platform, *to: str, subject: str) -> str:
    args = ["send", "--from", "support@example.test", "--subject", subject]
    for t in to:
        args += ["--to", t]
    return p.cli(*args).stdout.strip()


def _outbound(p: Platform, qid: str) -> dict[str, Any]:
    return json.loads(p.cli("outbound", "show", qid, "--json").stdout)  # type: ignore[no-any-return]


def _verify_dkim(dns: DNSServer, raw: bytes) -> bool:
    resolver = Resolver([dns.address], timeout=3.0)

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.txt_sync(name.decode().rstrip("."))
        except Exception:
            return None
        return b"".join(r.value for r in answer.records)

    # Our own Received header is on top of the stored copy; DKIM does not cover it.
    return bool(dkimpy.verify(raw, dnsfunc=dnsfunc))


def test_dkim_keys_through_cli_and_api_sign_delivered_mail(mc: Platform, dns: DNSServer) -> None:
    out = mc.cli("dkim", "create", "example.test", "--algorithm", "ed25519").stdout
    record_line = next(line for line in out.splitlines() if "IN TXT" in line)
    name, _, value = record_line.partition(". IN TXT ")
    assert name == "mc1._domainkey.example.test"
    assert "PRIVATE" not in out
    dns.set(name, "TXT", value.strip('"'))
    check = json.loads(mc.cli("dkim", "check", "example.test", "--json").stdout)
    assert [(c["selector"], c["found"], c["state"]) for c in check] == [("mc1", True, "active")]

    with mc.api() as api:
        keys = api.get("/api/v1/dkim-keys").json()
        assert [(k["domain"], k["state"]) for k in keys] == [("example.test", "active")]
        assert all("private" not in k for k in keys)
        r = api.post("/api/v1/dkim-keys", json={"domain": "other.test", "algorithm": "rsa"})
        assert r.status_code == 201, r.text
        assert r.json()["dns_record"].startswith("v=DKIM1; k=rsa; p=MII")
        assert api.post("/api/v1/dkim-keys", json={"domain": "other.test"}).status_code == 409
        r = api.post("/api/v1/dkim-keys/other.test/check")
        assert r.status_code == 200 and r.json()["results"][0]["found"] is False
        assert api.post("/api/v1/dkim-keys/none.test/check").status_code == 404

    before = {m["queue_id"] for m in _inbound(mc)}
    qid = _send(mc, "info@example.test", subject="signed")
    info = wait_for("the message to come back in", lambda: [
        m for m in _inbound(mc)
        if m["queue_id"] not in before and "info@example.test" in m["rcpt_to"]
    ])[0]
    # The envelope sender is this message's VERP address; the content is DKIM-signed.
    assert info["mail_from"].startswith(f"bounce+{qid.lower()}.")
    assert info["mail_from"].endswith("@mx.example.test")
    raw = _raw(mc, info["queue_id"])
    assert b"DKIM-Signature:" in raw and b"d=example.test" in raw
    assert _verify_dkim(dns, raw)
    # The compliance BCC got a copy (same transaction: one connection per domain), silently:
    # no header of the message names it.
    assert sorted(info["rcpt_to"]) == ["archive@example.test", "info@example.test"]
    parsed = parse_message(raw)
    shown = {a.address for a in (*parsed.to, *parsed.cc, *parsed.bcc)}
    assert shown == {"info@example.test"}


def test_refused_recipient_is_suppressed_and_the_sender_gets_a_dsn(mc: Platform) -> None:
    before = {m["queue_id"] for m in _inbound(mc)}
    qid = _send(mc, "nobody@example.test", subject="to nobody")
    final = wait_for("the permanent failure", lambda: (
        m := _outbound(mc, qid))["state"] == "bounced" and m)
    assert final["recipients"][0]["state"] == "bounced"
    bounced = json.loads(mc.cli("bounces", "list", "--json").stdout)
    entry = next(b for b in bounced if b["address"] == "nobody@example.test")
    assert entry["status"] == "5.1.1" and entry["source"] == "delivery"

    # The DSN went out from <> and came back to the sender through the listener.
    dsn = wait_for("the DSN to the sender", lambda: [
        m for m in _inbound(mc)
        if m["queue_id"] not in before and m["mail_from"] == ""
        and "support@example.test" in m["rcpt_to"]
    ])[0]
    raw = _raw(mc, dsn["queue_id"])
    assert b"multipart/report" in raw and b"Final-Recipient: rfc822; nobody@example.test" in raw
    assert b"Status: 5.1.1" in raw and b"Auto-Submitted: auto-replied" in raw


def test_dsn_to_a_verp_address_marks_the_recipient_bounced(mc: Platform) -> None:
    before = {m["queue_id"] for m in _inbound(mc)}
    qid = _send(mc, "info@example.test", subject="will bounce later")
    arrived = wait_for("delivery", lambda: [
        m for m in _inbound(mc)
        if m["queue_id"] not in before and "info@example.test" in m["rcpt_to"]
    ])[0]
    verp = arrived["mail_from"]
    message_id = _outbound(mc, qid)["message_id"]
    # This instance plays the remote end too; our own receiving addresses are never suppressed
    # (issue 12.2), so info@ stops being one of ours before "the remote" reports it unknown.
    mc.cli("address", "remove", "info@example.test")

    # A remote MTA's DSN (Postfix's format) about info@example.test, to the VERP address.
    dsn = (FIXTURES / "postfix-dsn.eml").read_bytes()
    dsn = dsn.replace(b"kunde@nirgendwo.example", b"info@example.test")
    dsn = dsn.replace(b"<mailcase.1027.f7a8b9@example.test>", message_id.encode())
    dsn = dsn.replace(b"To: support@example.test", f"To: {verp}".encode())
    dsn = dsn.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    with smtplib.SMTP(*mc.smtp, timeout=30) as s:
        s.ehlo("mail.example.org")
        s.mail("<>")
        # An altered VERP address (last MAC character changed) is refused at RCPT.
        local, _, domain = verp.partition("@")
        forged = f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{domain}"
        assert s.rcpt(forged)[0] == 550
        other = verp.replace(qid.lower(), "0" * len(qid))
        assert s.rcpt(other)[0] == 550
        assert s.rcpt(verp)[0] == 250
        code, _ = s.data(dsn)
        assert code == 250

    entry = wait_for("the bounce", lambda: next(
        (b for b in json.loads(mc.cli("bounces", "list", "--json").stdout)
         if b["address"] == "info@example.test"), None))
    assert entry["status"] == "5.1.1" and entry["queue_id"] == qid and entry["source"] == "dsn"

    with mc.api() as api:
        listed = api.get("/api/v1/bounces").json()
        assert any(b["address"] == "info@example.test" for b in listed)
        events = api.get("/api/v1/bounces", params={"events": "true"}).json()
        ev = next(e for e in events if e["recipient"] == "info@example.test")
        assert ev["kind"] == "hard" and ev["outbound_queue_id"] == qid
        assert ev["message_id"] == message_id and ev["remote_mta"] == "mx.nirgendwo.example"
    # In the email log under the outbound queue id.
    log = json.loads(mc.cli("log", "--queue-id", qid, "--json").stdout)
    bounced = [r for r in log if r["outcome"] == "bounced"]
    assert bounced and bounced[0]["rcpt_to"] == ["info@example.test"]
    assert "address suppressed" in bounced[0]["reason"]
    assert "bounce" in mc.log_text() and f"{qid}: to=<info@example.test>" in mc.log_text()

    # Sending to it again: stored as suppressed, never delivered.
    # `send` names the suppressed recipient and exits 1: none of them gets it (issue 12.3).
    res = mc.cli("send", "--from", "support@example.test", "--to", "info@example.test",
                 "--subject", "suppressed", check=False)
    assert res.returncode == 1, res
    assert "info@example.test: not sent: on the suppression list" in res.stderr
    assert "every recipient is suppressed" in res.stderr
    again = res.stdout.strip()
    shown = _outbound(mc, again)
    assert [(r["address"], r["state"]) for r in shown["recipients"]
            if r["address"] != "archive@example.test"] == [("info@example.test", "suppressed")]

    # Cleared through the API: gone from the list; the CLI says so when it is not listed.
    with mc.api() as api:
        assert api.delete("/api/v1/bounces/info@example.test").status_code == 204
        assert api.delete("/api/v1/bounces/info@example.test").status_code == 404
        assert all(b["address"] != "info@example.test" for b in api.get("/api/v1/bounces").json())
    res = mc.cli("bounces", "clear", "info@example.test", check=False)
    assert res.returncode != 0 and "not on the suppression list" in res.stderr
