"""Stored mail served for the browser to render: /api/v1/messages/{id}/raw came back as
message/rfc822 without `nosniff`, a CSP or `Content-Disposition: attachment`, so a sender's
HTML or SVG could be rendered (and its script run) in the API's origin. Every route that
returns content a sender wrote must be a download with sniffing off and a CSP that allows
nothing: the raw message, attachments and the email-log CSV export (addresses, Message-IDs)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.test_cases_flow import case_of, send
from tests.support.dnsserver import DNSServer
from tests.support.platform import Platform, running_platform

_HTML = "<html><body><script>alert(document.cookie)</script></body></html>"
_MAIL = (
    "From: eve@elsewhere.test\r\nTo: support@example.test\r\nSubject: <svg onload=alert(1)>\r\n"
    "Message-ID: <d1@elsewhere.test>\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    f"--b\r\nContent-Type: text/html\r\n\r\n{_HTML}\r\n"
    '--b\r\nContent-Type: text/html; name="x.html"\r\n'
    'Content-Disposition: inline; filename="\\"evil\r\n .html"\r\n\r\n'
    f"{_HTML}\r\n--b--\r\n"
).encode()


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("downloads")
    with DNSServer({}) as dns:
        config = (
            f'[dns]\nnameservers = ["{dns.address}"]\ntimeout = 2.0\n'
            "[pipeline]\npoll_interval = 0.2\n[inbound]\nprocesses = 1\n"
        )
        with running_platform(tmp, config=config) as p:
            p.cli("routing", "add", "support@example.test", "--name", "Support")
            yield p


def _assert_download(r: httpx.Response) -> None:
    assert r.status_code == 200, r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp
    disposition = r.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="'), disposition
    assert "\r" not in disposition and "\n" not in disposition
    assert disposition.count('"') == 2, disposition


def test_every_content_route_is_a_sandboxed_download(mc: Platform) -> None:
    with mc.api() as api:
        qid = send(mc, _MAIL, mail_from="eve@elsewhere.test")
        number = case_of(api, qid)
        raw = api.get(f"/api/v1/messages/{qid}/raw")
        _assert_download(raw)
        assert raw.content.endswith(_MAIL)
        emails = api.get(f"/api/v1/cases/{number}/emails")
        assert emails.headers["x-content-type-options"] == "nosniff"  # JSON with the HTML body
        assert "sandbox" in emails.headers["content-security-policy"]
        (email,) = emails.json()
        (att,) = email["attachments"]
        got = api.get(f"/api/v1/cases/{number}/attachments/{att['id']}")
        _assert_download(got)
        assert got.text.startswith(_HTML)
        csv = api.get("/api/v1/email-log", params={"queue_id": qid, "format": "csv"})
        _assert_download(csv)
        assert "<d1@elsewhere.test>" in csv.text  # a Message-ID the sender wrote
