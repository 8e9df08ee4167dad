"""A forged In-Reply-To cleared its own flag: a stranger replying with the customer's Message-ID
was attached and flagged "sender not on thread" once, but their second email was not flagged,
because every address of every email on the case, flagged ones included, counted as a
participant. Only the case's contact, our own addresses and the addresses on unflagged emails
may count."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_cases_flow import case_of, send
from tests.support.dnsserver import DNSServer
from tests.support.platform import Platform, running_platform


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("forged-reply")
    with DNSServer({}) as dns:
        config = (
            '[server]\nhostname = "mx.mailcase.test"\n'
            f'[dns]\nnameservers = ["{dns.address}"]\ntimeout = 2.0\n'
            "[pipeline]\npoll_interval = 0.2\n[inbound]\nprocesses = 1\n"
        )
        with running_platform(tmp, config=config) as p:
            p.cli("routing", "add", "support@example.test", "--name", "Support")
            yield p


def _mail(frm: str, mid: str, *, cc: str = "", in_reply_to: str = "") -> bytes:
    head = f"From: {frm}\r\nTo: support@example.test\r\nSubject: Re: invoice\r\nMessage-ID: {mid}\r\n"
    if cc:
        head += f"Cc: {cc}\r\n"
    if in_reply_to:
        head += f"In-Reply-To: {in_reply_to}\r\nReferences: {in_reply_to}\r\n"
    return f"{head}\r\nbody\r\n".encode()


def _reply(mc: Platform, api: httpx.Client, frm: str, mid: str, cc: str = "") -> str:
    return case_of(api, send(mc, _mail(frm, mid, cc=cc, in_reply_to="<f0@customer.test>"),
                             mail_from=frm))


def test_a_stranger_stays_flagged_on_every_forged_reply(mc: Platform, tmp_path: Path) -> None:
    with mc.api() as api:
        number = case_of(api, send(mc, _mail("dana@customer.test", "<f0@customer.test>",
                                             cc="carl@customer.test"),
                                   mail_from="dana@customer.test"))
        # The stranger replies twice with the customer's Message-ID, Cc'ing an accomplice.
        for i in (1, 2):
            assert _reply(mc, api, "eve@elsewhere.test", f"<f{i}@elsewhere.test>",
                          cc="mallory@elsewhere.test") == number
        # The accomplice, Cc'd only on flagged emails, is no participant either.
        assert _reply(mc, api, "mallory@elsewhere.test", "<f3@elsewhere.test>") == number
        # Legitimate participants: the contact and the colleague on her (unflagged) email.
        assert _reply(mc, api, "carl@customer.test", "<f4@customer.test>") == number
        assert _reply(mc, api, "dana@customer.test", "<f5@customer.test>") == number
        emails = api.get(f"/api/v1/cases/{number}/emails").json()
    assert [(e["from_address"], e["sender_not_on_thread"]) for e in emails] == [
        ("dana@customer.test", False),
        ("eve@elsewhere.test", True),
        ("eve@elsewhere.test", True),
        ("mallory@elsewhere.test", True),
        ("carl@customer.test", False),
        ("dana@customer.test", False),
    ]
