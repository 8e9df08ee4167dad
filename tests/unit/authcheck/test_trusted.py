"""Verdicts of fetched mail from the trusted mailbox server's headers (issue 19).

Forged Authentication-Results (another authserv-id, or the trusted one below the server's
topmost field) and forged ARC sets (sealed by a domain that is not the trusted server's) must
never make a message pass; the SPF of the IMAP connection is never evaluated.
"""

from __future__ import annotations

import dkim  # type: ignore[import-untyped]

from mailcase.authcheck import is_authenticated
from mailcase.authcheck.trusted import (
    MAX_RESULTS_FIELDS,
    authenticate_fetched,
    trusted_verdicts,
)
from mailcase.dns import Resolver
from tests.support.dnsserver import DNSServer
from tests.unit.authcheck.helpers import AUTHSERV_ID, DKIMKey, message, publish, sign

MAILBOX = "mx.mailbox.test"  # the team's mailbox server, trusted by the admin
PASS = f"Authentication-Results: {MAILBOX}; spf=pass smtp.mailfrom=example.test\r\n"
FORGED_PASS = "Authentication-Results: {id}; spf=pass smtp.mailfrom=example.test; " \
    "dkim=pass header.d=example.test; dmarc=pass header.from=example.test\r\n"
FAIL = (f"Authentication-Results: {MAILBOX}; spf=fail smtp.mailfrom=example.test; "
        "dkim=none; dmarc=fail header.from=example.test\r\n")
RECEIVED = "Received: from mx.sender.test by mx.mailbox.test; Mon, 01 Jan 2024 10:00:01 +0000\r\n"


def fetched(raw: bytes, resolver: Resolver, trusted: tuple[str, ...] = (MAILBOX,)) -> bool:
    results = authenticate_fetched(raw, trusted=trusted, resolver=resolver,
                                   authserv_id=AUTHSERV_ID)
    return is_authenticated(results)


def test_the_trusted_servers_pass_authenticates(resolver: Resolver) -> None:
    raw = (PASS + RECEIVED).encode() + message()
    results = authenticate_fetched(raw, trusted=[MAILBOX], resolver=resolver,
                                   authserv_id=AUTHSERV_ID)
    assert results.spf.result == "pass" and results.spf.domain == "example.test"
    assert f"reported by {MAILBOX}" in results.spf.reason
    assert results.dmarc.spf_aligned and is_authenticated(results)


def test_no_trusted_results_no_pass_and_no_connection_spf(resolver: Resolver) -> None:
    results = authenticate_fetched(message(), trusted=[MAILBOX], resolver=resolver,
                                   authserv_id=AUTHSERV_ID)
    assert results.spf.result == "none" and "IMAP connection" in results.spf.reason
    assert not is_authenticated(results)


def test_results_of_an_untrusted_authserv_id_are_ignored(resolver: Resolver) -> None:
    raw = (FORGED_PASS.format(id="mx.evil.test") + RECEIVED).encode() + message()
    assert not fetched(raw, resolver)
    # Only an authserv-id the admin listed counts; none listed: nothing counts.
    assert fetched((PASS + RECEIVED).encode() + message(), resolver, trusted=("other.test",)) \
        is False
    assert fetched((PASS + RECEIVED).encode() + message(), resolver, trusted=()) is False


def test_a_forged_trusted_field_below_the_servers_topmost_is_ignored(resolver: Resolver) -> None:
    """The sender put a 'pass' under the trusted name into the message; the server's own
    field (fail) is above it: the fail counts."""
    raw = (FAIL + RECEIVED + FORGED_PASS.format(id=MAILBOX)).encode() + message()
    v = trusted_verdicts(raw, [MAILBOX], None)
    assert v is not None and v.spf is not None and v.spf.result == "fail"
    assert v.dmarc_pass_for is None
    assert not fetched(raw, resolver)


def test_authserv_id_matching_ignores_case_comments_and_version(resolver: Resolver) -> None:
    raw = (f"Authentication-Results: (the box) MX.Mailbox.TEST 1; spf=pass "
           f"smtp.mailfrom=bounce@example.test\r\n{RECEIVED}").encode() + message()
    assert fetched(raw, resolver)


def test_a_trusted_dmarc_pass_for_the_from_domain_authenticates(resolver: Resolver) -> None:
    raw = (f"Authentication-Results: {MAILBOX}; dkim=pass header.d=example.test "
           "header.s=gone; dmarc=pass header.from=example.test\r\n").encode() + message()
    assert fetched(raw, resolver)
    # ... but not a DMARC pass for another domain than the message's From.
    other = (f"Authentication-Results: {MAILBOX}; dmarc=pass header.from=other.test\r\n"
             ).encode() + message()
    assert not fetched(other, resolver)


def test_hostile_results_fields_are_bounded_and_never_crash(resolver: Resolver) -> None:
    junk = "Authentication-Results: x.test; spf=pass smtp.mailfrom=example.test\r\n"
    many = (junk * (MAX_RESULTS_FIELDS + 5) + PASS).encode() + message()
    assert trusted_verdicts(many, [MAILBOX], None) is None  # past the bound: not looked at
    broken = (f"Authentication-Results: {MAILBOX}; spf=pass (((( smtp.mailfrom=\r\n"
              ).encode() + message()
    assert not fetched(broken, resolver)
    weird = (f"Authentication-Results: {MAILBOX}; spf=superpass smtp.mailfrom=example.test\r\n"
             ).encode() + message()
    assert not fetched(weird, resolver)


def test_own_dkim_verification_counts_for_fetched_mail(
    dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey
) -> None:
    publish(dns_server, rsa, "example.test")
    assert fetched(sign(message(), rsa, "example.test"), resolver, trusted=())


def _arc(msg: bytes, key: DKIMKey, sealer: str, authserv: str) -> bytes:
    msg = f"Authentication-Results: {authserv}; spf=pass smtp.mailfrom=example.test\r\n" \
        .encode() + msg
    sets = dkim.arc_sign(msg, b"arc", sealer.encode(), key.private, authserv.encode(),
                         include_headers=[b"from", b"to", b"subject", b"date"])
    return b"".join(sets) + msg.split(b"\r\n", 1)[1]  # the plain field is not kept


def test_arc_sealed_by_the_trusted_servers_domain_authenticates(
    dns_server: DNSServer, resolver: Resolver, other_rsa: DKIMKey
) -> None:
    publish(dns_server, other_rsa, "mailbox.test", "arc")
    raw = _arc(message(), other_rsa, "mailbox.test", MAILBOX)
    results = authenticate_fetched(raw, trusted=[MAILBOX], resolver=resolver,
                                   authserv_id=AUTHSERV_ID)
    assert results.arc is not None and results.arc.result == "pass"
    assert results.spf.result == "pass" and is_authenticated(results)


def test_arc_sealed_by_another_domain_under_the_trusted_name_is_ignored(
    dns_server: DNSServer, resolver: Resolver, other_rsa: DKIMKey
) -> None:
    """A sender can seal a valid ARC set with its own key and write any authserv-id into it:
    the seal's d= must be the trusted server's domain."""
    publish(dns_server, other_rsa, "evil.test", "arc")
    raw = _arc(message(), other_rsa, "evil.test", MAILBOX)
    results = authenticate_fetched(raw, trusted=[MAILBOX], resolver=resolver,
                                   authserv_id=AUTHSERV_ID)
    assert results.arc is not None and results.arc.result == "pass"  # valid, but not trusted
    assert not is_authenticated(results)


def test_a_broken_arc_chain_is_ignored(
    dns_server: DNSServer, resolver: Resolver, other_rsa: DKIMKey
) -> None:
    publish(dns_server, other_rsa, "mailbox.test", "arc")
    raw = _arc(message(), other_rsa, "mailbox.test", MAILBOX).replace(b"Order 1027", b"Order 1")
    results = authenticate_fetched(raw, trusted=[MAILBOX], resolver=resolver,
                                   authserv_id=AUTHSERV_ID)
    assert results.arc is not None and results.arc.result == "fail"
    assert not is_authenticated(results)
