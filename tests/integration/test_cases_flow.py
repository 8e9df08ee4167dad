"""Email-to-Case end to end: a real `mailcase serve`, mail over SMTP, cases read back through
the REST API and the CLI, sender authentication against a local DNS server.

One platform and one DNS server for the whole module (fast); each test uses its own routing
addresses or messages so the tests do not depend on each other's order.
"""

from __future__ import annotations

import json
import re
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.dnsserver import DNSServer
from tests.support.platform import Platform, running_platform

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eml"
WAIT = 30.0  # seconds a message may take from 250 to its case (bounded polling)

ZONE = {
    # The bank publishes a strict policy; the forged message comes from elsewhere.
    "northbank.example": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
    "_dmarc.northbank.example": {"TXT": ["v=DMARC1; p=reject; adkim=s; aspf=s"]},
    # A well-behaved sender: SPF allows loopback, DMARC aligned through SPF.
    "good.example": {"TXT": ["v=spf1 ip4:127.0.0.0/8 -all"]},
    "_dmarc.good.example": {"TXT": ["v=DMARC1; p=reject"]},
}


@pytest.fixture(scope="module")
def dns() -> Iterator[DNSServer]:
    with DNSServer(ZONE) as server:
        yield server


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory, dns: DNSServer) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("cases")
    config = (
        '[server]\nhostname = "mx.mailcase.test"\n'
        f'[dns]\nnameservers = ["{dns.address}"]\ntimeout = 2.0\n'
        "[pipeline]\npoll_interval = 0.2\n"
        "[inbound]\nprocesses = 1\n"  # the cases, not the acceptors (test_acceptors.py)
    )
    with running_platform(tmp, config=config) as p:
        p.cli("routing", "add", "support@example.test", "--name", "Support", "--save-headers")
        p.cli("routing", "add", "billing@example.test", "--owner", "billing-team", "--priority", "High")
        p.cli("routing", "add", "secure@example.test", "--require-authenticated-sender", "--queue", "tier2")
        yield p


@pytest.fixture(scope="module")
def api(mc: Platform) -> Iterator[httpx.Client]:
    with mc.api() as client:
        yield client


def send(p: Platform, raw: bytes, rcpt: tuple[str, ...] = ("support@example.test",), mail_from: str = "sender@client.test") -> str:
    """Deliver over SMTP; returns the queue id from the 250 reply."""
    with smtplib.SMTP(*p.smtp, timeout=15) as s:
        s.ehlo("client.test")
        assert s.mail(mail_from)[0] == 250
        for r in rcpt:
            code, text = s.rcpt(r)
            assert code == 250, (r, code, text)
        code, text = s.data(raw)
        assert code == 250, text
    return text.decode().rsplit(" ", 1)[-1]


def outcome(api: httpx.Client, queue_id: str) -> dict[str, Any]:
    """The Email-to-Case log entry of a message (created / attached / refused / duplicate)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        entries = api.get("/api/v1/email-log", params={"queue_id": queue_id}).json()
        for e in entries:
            reason = e.get("reason") or ""
            if e["outcome"] in ("rejected", "discarded", "bounced", "deferred", "quarantined") or re.match(
                r"(case \d{8} created|attached to case|duplicate of)", reason
            ):
                return e  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"no Email-to-Case outcome for {queue_id} within {WAIT}s: {entries}")


def case_of(api: httpx.Client, queue_id: str) -> str:
    e = outcome(api, queue_id)
    m = re.search(r"case (\d{8})", e.get("reason") or "")
    assert m, e
    return m.group(1)


def case_and_emails(api: httpx.Client, number: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    case = api.get(f"/api/v1/cases/{number}")
    assert case.status_code == 200, case.text
    emails = api.get(f"/api/v1/cases/{number}/emails")
    assert emails.status_code == 200, emails.text
    return case.json(), emails.json()


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# ------------------------------------------------------------------------------ corpus
def test_html_only_external_tag(mc: Platform, api: httpx.Client) -> None:
    number = case_of(api, send(mc, fixture("outlook-html-only-external.eml")))
    case, (email,) = case_and_emails(api, number)
    assert case["subject"] == "[External] AW: Störung Drucker 3. OG [ thread::Y2FzZS0xMDI3::aGmac ]"
    assert case["description"].startswith("Hallo Support-Team,\n\nder Drucker im 3. OG druckt")
    assert (case["status"], case["priority"], case["origin"]) == ("New", "Medium", "Email")
    assert (case["supplied_name"], case["supplied_email"]) == ("Jörg Müller", "joerg.mueller@beispiel.de")
    assert case["routing_address"] == "support@example.test" and case["contact_id"] is None
    assert email["direction"] == "inbound"
    assert "<p>Können Sie bitte jemanden vorbeischicken?</p>" in email["html_body"]
    assert email["message_id"] == "<AM6PR05MB61844C6A0E8C1A9F2D3B7E4ABCF12@AM6PR05MB6184.eurprd05.prod.outlook.com>"
    assert email["in_reply_to"] == "<mailcase.1027.a1b2c3@example.test>"
    assert email["references"] == ["<mailcase.1027.a1b2c3@example.test>"]
    # transport facts and authentication
    assert email["client_ip"] == "127.0.0.1" and email["helo"] == "client.test"
    assert email["tls_version"] is None and email["requiretls"] is False
    assert email["mail_from"] == "sender@client.test"
    assert email["authentication_results"].startswith("mx.mailcase.test; spf=")
    assert email["auth"]["dmarc"]["from_domain"] == "beispiel.de"
    # support@ saves headers
    assert ["Thread-Topic", "[External] AW: =?utf-8?Q?St=C3=B6rung_Drucker_3._OG?="] in email["headers"]
    assert email["text_truncated"] is False and email["headers_truncated"] is False


def test_gmail_alternative_with_cc(mc: Platform, api: httpx.Client) -> None:
    number = case_of(api, send(mc, fixture("gmail-alternative.eml")))
    case, (email,) = case_and_emails(api, number)
    assert case["subject"] == "Dead pixels on 2 of 5 monitors (order #A-20931)"
    assert case["description"].startswith("Hi team,\n\nour order #A-20931 arrived yesterday")
    assert (case["supplied_name"], case["supplied_email"]) == ("Priya Raman", "priya.raman@gmail.com")
    assert email["cc"] == [
        {"address": "facilities@northwind.example", "name": "Facilities, Northwind"},
        {"address": "tom.baker@northwind.example", "name": ""},
    ]
    assert "<ul><li>MX-27Q-00419</li><li>MX-27Q-00422</li></ul>" in email["html_body"]
    # gmail.com's DKIM key is not in our DNS: a verdict, not an error
    assert email["authenticated"] is False
    assert any(d["domain"] == "gmail.com" for d in email["auth"]["dkim"])


def test_apple_related_cid_image_linked_and_downloadable(mc: Platform, api: httpx.Client) -> None:
    number = case_of(api, send(mc, fixture("apple-related-cid.eml")))
    case, (email,) = case_and_emails(api, number)
    assert case["subject"] == "Erreur sur la page des paramètres"
    (img,) = email["attachments"]
    assert (img["filename"], img["content_type"], img["size"], img["inline"]) == (
        "Bildschirmfoto 2024-06-11 um 11.58.02.png", "image/png", 77, True
    )
    assert img["content_id"] == "5A1E2D7C-9B3F-4C1A-8E2D-0F6B7C8D9E01"
    url = f"/api/v1/cases/{number}/attachments/{img['id']}"
    assert img["url"] == url
    assert f'src="{url}"' in email["html_body"] and "cid:" not in email["html_body"]
    got = api.get(url)
    assert got.status_code == 200 and got.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert got.headers["content-type"] == "image/png"
    assert got.headers["content-disposition"].startswith("attachment;")
    assert httpx.get(mc.http_base + url).status_code == 401  # behind the token


def test_tnef_unpacked(mc: Platform, api: httpx.Client) -> None:
    number = case_of(api, send(mc, fixture("outlook-tnef-winmail.eml")))
    case, (email,) = case_and_emails(api, number)
    assert case["subject"] == "Angebot Wartungsvertrag"
    assert case["description"].startswith("Sehr geehrte Damen und Herren,\n\nanbei unser Angebot für")
    assert [(a["filename"], a["content_type"]) for a in email["attachments"]] == [
        ("Angebot Wartung 2024.pdf", "application/pdf"), ("Kostenübersicht.csv", "text/csv"),
    ]


def test_iso_2022_jp(mc: Platform, api: httpx.Client) -> None:
    number = case_of(api, send(mc, fixture("outlook-iso-2022-jp.eml")))
    case, (email,) = case_and_emails(api, number)
    assert case["subject"] == "【至急】請求書の再発行について①"
    assert case["supplied_name"] == "佐藤 花子"
    assert "①宛先：経理部 佐藤花子\n②送付方法：PDFでメール" in case["description"]
    assert email["html_body"] == "" and email["attachments"] == []


def test_windows_1252_labelled_utf8(mc: Platform, api: httpx.Client) -> None:
    number = case_of(api, send(mc, fixture("windows-1252-labelled-utf8.eml")))
    case, _ = case_and_emails(api, number)
    assert case["subject"] == "Commande non reçue"
    assert case["supplied_name"] == "Hélène Lefèvre"
    assert "(facture n° 88123, 1 249,00 €)" in case["description"]


def test_rfc2231_names(mc: Platform, api: httpx.Client) -> None:
    number = case_of(api, send(mc, fixture("thunderbird-rfc2231-names.eml")))
    case, (email,) = case_and_emails(api, number)
    assert case["subject"] == "Prüfbericht Übergabe Heizungsanlage"
    assert [a["filename"] for a in email["attachments"]] == [
        "Prüfbericht_Übergabe_Heizungsanlage_März_2024_final_mit_Änderungen.pdf",
        "見積書_2024年6月.xlsx",
    ]
    assert [a["size"] for a in email["attachments"]] == [78, 134]


def test_forwarded_thread_to_billing_routing(mc: Platform, api: httpx.Client) -> None:
    number = case_of(api, send(mc, fixture("outlook-forward-attached.eml"), rcpt=("billing@example.test",)))
    case, (email,) = case_and_emails(api, number)
    assert case["subject"] == "FW: Invoice 2024-0311 charged twice"
    assert (case["owner"], case["priority"], case["routing_address"]) == ("billing-team", "High", "billing@example.test")
    assert case["description"] == "Please take care of this one, the customer was charged twice.\n\nMarco\n"
    (fwd,) = email["attachments"]
    assert (fwd["content_type"], fwd["filename"]) == ("message/rfc822", "Re_ Invoice 2024-0311 charged twice.eml")
    assert email["headers"] is None  # billing@ does not save headers


def test_out_of_office_dsn_calendar_phishy_broken(mc: Platform, api: httpx.Client) -> None:
    ooo = case_of(api, send(mc, fixture("outlook-ooo-autoreply.eml")))
    case, _ = case_and_emails(api, ooo)
    assert case["subject"] == "Automatische Antwort: Ihre Anfrage [ thread::Y2FzZS0xMDI3::aGmac ]"
    assert case["description"].startswith("Vielen Dank für Ihre Nachricht.")

    dsn = case_of(api, send(mc, fixture("postfix-dsn.eml"), mail_from=""))
    case, (email,) = case_and_emails(api, dsn)
    assert case["supplied_email"] == "MAILER-DAEMON@mail.example.org"
    assert case["description"].startswith("This is the mail system at host mail.example.org.")
    assert [a["content_type"] for a in email["attachments"]] == ["message/delivery-status", "message/rfc822"]
    assert email["mail_from"] == ""

    cal = case_of(api, send(mc, fixture("outlook-calendar-request.eml")))
    _, (email,) = case_and_emails(api, cal)
    assert [(a["filename"], a["content_type"]) for a in email["attachments"]] == [("invite.ics", "text/calendar")]
    assert email["cc"] == [{"address": "k.weber@weber-haustechnik.example", "name": "Karl Weber"}]

    phish = case_of(api, send(mc, fixture("phishy-html-script.eml")))
    _, (email,) = case_and_emails(api, phish)
    html = email["html_body"].lower()
    assert "<script" not in html and "javascript:" not in html and not re.search(r"\son[a-z]+\s*=", html)

    # (SMTP refuses its NUL characters, rightly: the rest of its damage goes through)
    broken = send(mc, fixture("broken-parts.eml").replace(b"\0", b"?"))
    assert re.match(r"case \d{8} created", outcome(api, broken)["reason"])


def test_forged_from_under_dmarc_reject(mc: Platform, api: httpx.Client) -> None:
    raw = fixture("forged-from-dmarc-reject.eml")
    # To a routing address without the requirement: a case, with the failed verdicts on it.
    number = case_of(api, send(mc, raw, mail_from="bounce@northbank.example"))
    _, (email,) = case_and_emails(api, number)
    assert email["authenticated"] is False
    assert email["auth"]["spf"]["result"] == "fail"
    assert (email["auth"]["dmarc"]["result"], email["auth"]["dmarc"]["policy"]) == ("fail", "reject")
    assert "dmarc=fail (p=reject)" in email["authentication_results"]
    # To the routing address that requires an authenticated sender: refused, no case.
    qid = send(mc, raw.replace(b"Message-ID: <2024", b"Message-ID: <again-2024"), rcpt=("secure@example.test",), mail_from="bounce@northbank.example")
    entry = outcome(api, qid)
    assert entry["outcome"] in ("discarded", "bounced")
    assert "not authenticated" in entry["reason"]
    assert all(c["routing_address"] != "secure@example.test" for c in api.get("/api/v1/cases", params={"limit": 1000}).json()
               if c["subject"].startswith("Urgent: verify"))
    # The raw message stays in the spool table.
    assert api.get(f"/api/v1/messages/{qid}/raw").content.endswith(b"Northbank Security\r\n")


def test_authenticated_sender_accepted_by_secure_routing(mc: Platform, api: httpx.Client) -> None:
    raw = (
        b"From: Good Customer <alice@good.example>\r\nTo: secure@example.test\r\n"
        b"Subject: Contract renewal\r\nDate: Wed, 12 Jun 2024 10:00:00 +0000\r\n"
        b"Message-ID: <renewal-1@good.example>\r\n\r\nPlease renew.\r\n"
    )
    number = case_of(api, send(mc, raw, rcpt=("secure@example.test",), mail_from="alice@good.example"))
    case, (email,) = case_and_emails(api, number)
    assert (case["queue"], case["owner"]) == ("tier2", None)
    assert email["authenticated"] is True
    assert email["auth"]["dmarc"]["result"] == "pass" and email["auth"]["spf"]["result"] == "pass"


def test_temporary_dns_failure_defers_without_losing_the_message(mc: Platform, api: httpx.Client, dns: DNSServer) -> None:
    dns.servfail("flaky.example")
    dns.servfail("_dmarc.flaky.example")
    raw = (
        b"From: <bob@flaky.example>\r\nTo: secure@example.test\r\nSubject: flaky\r\n"
        b"Date: Wed, 12 Jun 2024 10:00:00 +0000\r\nMessage-ID: <flaky-1@flaky.example>\r\n\r\nhi\r\n"
    )
    qid = send(mc, raw, rcpt=("secure@example.test",), mail_from="bob@flaky.example")
    entry = outcome(api, qid)
    assert entry["outcome"] == "deferred", entry
    assert "temporary DNS failure" in entry["reason"]
    msg = api.get(f"/api/v1/messages/{qid}").json()
    assert msg["state"] == "received" and msg["attempts"] >= 1


# ------------------------------------------------------------------------------ threading
def _msg(subject: str, body: str, mid: str, *, frm: str = "Dana <dana@customer.test>", extra: str = "") -> bytes:
    head = f"From: {frm}\r\nTo: support@example.test\r\nSubject: {subject}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: {mid}\r\n{extra}"
    return (head + "\r\n" + body).encode()


def test_reply_threading_end_to_end(mc: Platform, api: httpx.Client) -> None:
    number = case_of(api, send(mc, _msg("Router keeps rebooting", "Every 5 minutes.\r\n", "<t0@customer.test>"), mail_from="dana@customer.test"))
    # An agent replies through the CLI: token in subject and body, Message-ID remembered.
    out = json.loads(mc.cli("cases", "reply", number, "--body", "Please send the logs.", "--json").stdout)
    assert out["to"] == ["dana@customer.test"]
    token = re.search(r"thread::[a-z2-7]+\.[a-z2-7]+::", out["subject"]).group(0)  # type: ignore[union-attr]
    assert out["subject"] == f"Re: Router keeps rebooting [ {token} ]"
    emails = api.get(f"/api/v1/cases/{number}/emails").json()
    assert emails[-1]["direction"] == "outbound" and emails[-1]["message_id"] == out["message_id"]
    assert emails[-1]["in_reply_to"] == "<t0@customer.test>"
    assert token in emails[-1]["text_body"] and emails[-1]["outbound_queue_id"] == out["outbound_queue_id"]

    # 1. The customer answers with In-Reply-To (subject changed, tags added).
    qid = send(mc, _msg("AW: [External] logs attached", "Here.\r\n", "<t1@customer.test>", extra=f"In-Reply-To: {out['message_id']}\r\n"), mail_from="dana@customer.test")
    assert case_of(api, qid) == number and "attached to case" in outcome(api, qid)["reason"]
    # 2. A client that drops In-Reply-To/References: only the token, subject changed.
    qid = send(mc, _msg(f"something else entirely [ {token} ]", "More logs.\r\n", "<t2@customer.test>"), mail_from="dana@customer.test")
    assert case_of(api, qid) == number and "(token)" in outcome(api, qid)["reason"]
    # 3. A forged token (signature altered): ignored and logged, a new case.
    sig = token.split(".")[1]
    forged = token.replace(sig, ("b" if sig[0] != "b" else "c") + sig[1:])
    qid = send(mc, _msg(f"Re: Router [ {forged} ]", "Me too.\r\n", "<t3@customer.test>"), mail_from="dana@customer.test")
    entry = outcome(api, qid)
    assert "created" in entry["reason"] and "ignored forged token" in entry["reason"]
    assert case_of(api, qid) != number
    # 4. Someone not on the thread replying with the real token: attached, flagged.
    qid = send(mc, _msg(f"Re: [ {token} ]", "Not me.\r\n", "<t4@customer.test>", frm="eve@elsewhere.test"), mail_from="eve@elsewhere.test")
    assert case_of(api, qid) == number
    emails = api.get(f"/api/v1/cases/{number}/emails").json()
    assert [(e["from_address"], e["sender_not_on_thread"]) for e in emails if e["direction"] == "inbound"] == [
        ("dana@customer.test", False), ("dana@customer.test", False), ("dana@customer.test", False), ("eve@elsewhere.test", True),
    ]
    # 5. Close through the API; a reply reopens it (default policy).
    r = api.patch(f"/api/v1/cases/{number}", json={"status": "Closed", "priority": "High", "owner": "alice"})
    assert r.status_code == 200 and r.json()["status"] == "Closed" and r.json()["closed_at"]
    qid = send(mc, _msg("Re: Router keeps rebooting", "It is back.\r\n", "<t5@customer.test>", extra="References: <t0@customer.test> <t1@customer.test>\r\n"), mail_from="dana@customer.test")
    assert case_of(api, qid) == number
    case = api.get(f"/api/v1/cases/{number}").json()
    assert (case["status"], case["priority"], case["owner"], case["closed_at"]) == ("Working", "High", "alice", None)
    # 6. Reply through the API.
    r = api.post(f"/api/v1/cases/{number}/emails", json={"body": "Fixed with firmware 2.1."})
    assert r.status_code == 201, r.text
    assert r.json()["subject"] == f"Re: Router keeps rebooting [ {token} ]"
    assert api.post("/api/v1/cases/99999999/emails", json={"body": "x"}).status_code == 404


def test_same_message_twice_one_case(mc: Platform, api: httpx.Client) -> None:
    raw = _msg("Duplicate me", "Once only.\r\n", "<dup-1@customer.test>")
    q1 = send(mc, raw, rcpt=("support@example.test", "billing@example.test"), mail_from="dana@customer.test")
    number = case_of(api, q1)
    q2 = send(mc, raw, rcpt=("billing@example.test",), mail_from="dana@customer.test")  # a retried delivery
    entry = outcome(api, q2)
    assert entry["reason"].startswith(f"duplicate of a message already on case {number}")
    assert len(api.get(f"/api/v1/cases/{number}/emails").json()) == 1
    assert [c for c in api.get("/api/v1/cases", params={"limit": 1000}).json() if c["subject"] == "Duplicate me"] != []
    assert len([c for c in api.get("/api/v1/cases", params={"limit": 1000}).json() if c["subject"] == "Duplicate me"]) == 1


# ------------------------------------------------------------------------------ admin
def test_routing_api_crud_reaches_smtp(mc: Platform, api: httpx.Client) -> None:
    assert httpx.get(mc.http_base + "/api/v1/routing-addresses").status_code == 401
    assert httpx.get(mc.http_base + "/api/v1/cases").status_code == 401
    r = api.post("/api/v1/routing-addresses", json={"address": "Sales@Example.test", "accept_from": ["customer.test"], "priority": "Low"})
    assert r.status_code == 201, r.text
    assert r.json()["accept_from"] == ["customer.test"] and r.json()["priority"] == "Low"
    assert api.post("/api/v1/routing-addresses", json={"address": "sales@example.test"}).status_code == 409
    assert api.post("/api/v1/routing-addresses", json={"address": "x@example.test", "priority": "soon"}).status_code == 422
    # Accepted by SMTP at once; a stranger is refused by accept-from.
    qid = send(mc, _msg("Quote please", "Hi\r\n", "<sales-1@elsewhere.test>", frm="x@elsewhere.test"), rcpt=("sales@example.test",), mail_from="x@elsewhere.test")
    assert "not in accept-from list" in outcome(api, qid)["reason"]
    r = api.patch("/api/v1/routing-addresses/sales@example.test", json={"accept_from": [], "require_tls": True})
    assert r.status_code == 200 and r.json()["require_tls"] is True and r.json()["accept_from"] == []
    with smtplib.SMTP(*mc.smtp, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("a@sender.test")
        assert s.rcpt("sales@example.test")[0] == 530  # TLS now required
    assert api.delete("/api/v1/routing-addresses/sales@example.test").status_code == 204
    assert api.get("/api/v1/routing-addresses/sales@example.test").status_code == 404
    with smtplib.SMTP(*mc.smtp, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("a@sender.test")
        assert s.rcpt("sales@example.test")[0] == 550


def test_cli_lists_shows_and_disables(mc: Platform, api: httpx.Client) -> None:
    api.post("/api/v1/contacts", json={"email": "known@customer.test", "name": "Known Person"})
    number = case_of(api, send(mc, _msg("CLI check", "Body for the CLI.\r\n", "<cli-1@customer.test>", frm="known@customer.test"), mail_from="known@customer.test"))
    listed = json.loads(mc.cli("cases", "list", "--json", "--status", "New").stdout)
    mine = [c for c in listed if c["number"] == number]
    assert mine and mine[0]["contact_email"] == "known@customer.test" and mine[0]["contact_name"] == "Known Person"
    table = mc.cli("cases", "list").stdout
    assert table.splitlines()[0].split() == ["NUMBER", "STATUS", "PRIORITY", "SUBJECT", "CONTACT", "OWNER", "CREATED_AT"]
    assert number in table
    shown = json.loads(mc.cli("cases", "show", number, "--json").stdout)
    assert shown["case"]["subject"] == "CLI check" and shown["emails"][0]["text_body"] == "Body for the CLI.\n"
    text = mc.cli("cases", "show", number).stdout
    assert "Subject:   CLI check" in text and "Body for the CLI." in text
    missing = mc.cli("cases", "show", "99999999", check=False)
    assert missing.returncode == 1 and "no case 99999999" in missing.stderr
    routing = json.loads(mc.cli("routing", "list", "--json").stdout)
    assert {r["address"] for r in routing} >= {"support@example.test", "billing@example.test", "secure@example.test"}
    mc.cli("routing", "add", "temp@example.test")
    shown_r = json.loads(mc.cli("routing", "show", "temp@example.test", "--json").stdout)
    assert shown_r["enabled"] is True and shown_r["origin"] == "Email"
    mc.cli("routing", "disable", "temp@example.test")
    deadline = time.monotonic() + WAIT
    while True:  # the running server follows the change (settings generation)
        with smtplib.SMTP(*mc.smtp, timeout=10) as s:
            s.ehlo("client.test")
            s.mail("a@sender.test")
            code = s.rcpt("temp@example.test")[0]
        if code == 550 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert code == 550
    dup = mc.cli("routing", "add", "support@example.test", check=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr
