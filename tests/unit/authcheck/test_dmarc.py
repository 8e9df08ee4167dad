"""DMARC: policy discovery, alignment and the forged-From case of issue 3."""

from __future__ import annotations

import pytest

from mailcase.authcheck import is_authenticated, org_domain
from mailcase.dns import Resolver
from tests.support.dnsserver import DNSServer
from tests.unit.authcheck.helpers import DKIMKey, check, message, publish, sign

SPF_LOOPBACK = "v=spf1 ip4:127.0.0.0/8 -all"


@pytest.fixture
def example(dns_server: DNSServer, rsa: DKIMKey) -> DNSServer:
    """example.test: SPF allows loopback, DKIM key published, DMARC p=reject."""
    dns_server.load(
        {
            "example.test": {"TXT": SPF_LOOPBACK, "A": "192.0.2.1"},
            "_dmarc.example.test": {"TXT": "v=DMARC1; p=reject; rua=mailto:d@example.test"},
        }
    )
    publish(dns_server, rsa, "example.test")
    return dns_server


def test_pass_via_aligned_dkim(example: DNSServer, resolver: Resolver, rsa: DKIMKey) -> None:
    # Sent from an address SPF does not allow (a forwarder): DKIM carries it.
    results = check(sign(message(), rsa, "example.test"), resolver, client_ip="198.51.100.7")
    assert results.spf.result == "fail"
    d = results.dmarc
    assert (d.result, d.policy, d.from_domain) == ("pass", "reject", "example.test")
    assert d.dkim_aligned and not d.spf_aligned
    assert is_authenticated(results)


def test_pass_via_aligned_spf(example: DNSServer, resolver: Resolver) -> None:
    results = check(message(), resolver)  # unsigned, from an allowed address
    assert results.dkim == ()
    d = results.dmarc
    assert (d.result, d.spf_aligned, d.dkim_aligned) == ("pass", True, False)
    assert is_authenticated(results)


def test_forged_from_under_reject_policy_fails(
    example: DNSServer, resolver: Resolver, other_rsa: DKIMKey
) -> None:
    """Issue 3: a forged From under a DMARC reject policy served by a local DNS server.

    The forger passes SPF and DKIM for its own domain; neither is aligned with From."""
    example.set("evil.test", "TXT", SPF_LOOPBACK)
    publish(example, other_rsa, "evil.test")
    forged = sign(message("CEO <ceo@example.test>"), other_rsa, "evil.test")
    results = check(forged, resolver, mail_from="x@evil.test", helo="evil.test")
    assert results.spf.result == "pass" and results.spf.domain == "evil.test"
    assert [(d.result, d.domain) for d in results.dkim] == [("pass", "evil.test")]
    d = results.dmarc
    assert (d.result, d.policy, d.from_domain) == ("fail", "reject", "example.test")
    assert not d.spf_aligned and not d.dkim_aligned
    assert not is_authenticated(results)
    assert "dmarc=fail (p=reject)" in results.header()


def test_relaxed_alignment_accepts_a_subdomain_signature(
    example: DNSServer, resolver: Resolver, rsa: DKIMKey
) -> None:
    publish(example, rsa, "mail.example.test")
    signed = sign(message(), rsa, "mail.example.test")
    results = check(signed, resolver, client_ip="198.51.100.7")
    assert results.dmarc.result == "pass" and results.dmarc.adkim == "r"


def test_strict_dkim_alignment_needs_the_exact_domain(
    example: DNSServer, resolver: Resolver, rsa: DKIMKey
) -> None:
    example.set("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; adkim=s")
    publish(example, rsa, "mail.example.test")
    signed = sign(message(), rsa, "mail.example.test")
    results = check(signed, resolver, client_ip="198.51.100.7")
    assert results.dkim[0].result == "pass"
    assert (results.dmarc.result, results.dmarc.adkim) == ("fail", "s")


def test_strict_spf_alignment(example: DNSServer, resolver: Resolver) -> None:
    example.set("bounces.example.test", "TXT", SPF_LOOPBACK)
    relaxed = check(message(), resolver, mail_from="b@bounces.example.test")
    assert relaxed.dmarc.result == "pass" and relaxed.dmarc.spf_aligned
    example.set("_dmarc.example.test", "TXT", "v=DMARC1; p=quarantine; aspf=s")
    strict = check(message(), resolver, mail_from="b@bounces.example.test")
    assert strict.spf.result == "pass"
    assert (strict.dmarc.result, strict.dmarc.policy, strict.dmarc.aspf) == (
        "fail",
        "quarantine",
        "s",
    )


def test_subdomain_policy_from_the_organizational_domain(
    example: DNSServer, resolver: Resolver
) -> None:
    example.set("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; sp=quarantine")
    example.set("sub.example.test", "A", "192.0.2.2")
    results = check(message("a@sub.example.test"), resolver, client_ip="198.51.100.7")
    d = results.dmarc
    assert (d.result, d.policy, d.record_domain, d.org_domain) == (
        "fail",
        "quarantine",
        "example.test",
        "example.test",
    )
    # A record at the subdomain itself wins over the organizational one.
    example.set("_dmarc.sub.example.test", "TXT", "v=DMARC1; p=none")
    d = check(message("a@sub.example.test"), resolver, client_ip="198.51.100.7").dmarc
    assert (d.policy, d.record_domain) == ("none", "sub.example.test")


def test_subdomain_without_sp_inherits_p(example: DNSServer, resolver: Resolver) -> None:
    example.set("sub.example.test", "A", "192.0.2.2")
    d = check(message("a@sub.example.test"), resolver, client_ip="198.51.100.7").dmarc
    assert d.policy == "reject"


def test_non_existent_subdomain_policy(example: DNSServer, resolver: Resolver) -> None:
    # RFC 9091 np=: a From domain that does not exist at all.
    example.set("_dmarc.example.test", "TXT", "v=DMARC1; p=none; sp=none; np=reject")
    d = check(message("a@ghost.example.test"), resolver, client_ip="198.51.100.7").dmarc
    assert (d.result, d.policy) == ("fail", "reject")
    example.set("real.example.test", "A", "192.0.2.3")
    d = check(message("a@real.example.test"), resolver, client_ip="198.51.100.7").dmarc
    assert d.policy == "none"


def test_no_record_is_none(dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey) -> None:
    dns_server.set("example.test", "TXT", SPF_LOOPBACK)
    results = check(message(), resolver)
    d = results.dmarc
    assert (d.result, d.policy, d.record_domain) == ("none", None, None)
    # Issue 3's rule still holds without DMARC: an aligned SPF pass authenticates.
    assert d.spf_aligned and is_authenticated(results)
    unaligned = check(message(), resolver, mail_from="b@elsewhere.test")
    assert unaligned.dmarc.result == "none" and not is_authenticated(unaligned)


def test_lookup_failure_is_temperror(example: DNSServer, resolver: Resolver) -> None:
    example.servfail("_dmarc.example.test")
    results = check(message(), resolver)
    assert results.dmarc.result == "temperror"
    assert results.dmarc.spf_aligned  # alignment is still known
    assert is_authenticated(results)


def test_several_records_mean_no_policy(example: DNSServer, resolver: Resolver) -> None:
    example.set("_dmarc.example.test", "TXT", "v=DMARC1; p=reject", "v=DMARC1; p=none")
    d = check(message(), resolver, client_ip="198.51.100.7").dmarc
    assert d.result == "none"  # RFC 7489 §6.6.3 step 5
    assert "2 DMARC records" in d.reason


def test_other_txt_records_are_ignored(example: DNSServer, resolver: Resolver) -> None:
    example.set("_dmarc.example.test", "TXT", "something else", "v=DMARC1; p=quarantine")
    assert check(message(), resolver).dmarc.policy == "quarantine"
    example.set("_dmarc.example.test", "TXT", "p=reject; v=DMARC1")  # v= must come first
    assert check(message(), resolver).dmarc.result == "none"


def test_record_without_valid_p(example: DNSServer, resolver: Resolver) -> None:
    # RFC 7489 §6.6.3 step 6: with rua=, act as p=none; without it, no DMARC at all.
    example.set("_dmarc.example.test", "TXT", "v=DMARC1; p=bogus; rua=mailto:d@example.test")
    d = check(message(), resolver, client_ip="198.51.100.7").dmarc
    assert (d.result, d.policy) == ("fail", "none")
    example.set("_dmarc.example.test", "TXT", "v=DMARC1; p=bogus")
    assert check(message(), resolver).dmarc.result == "none"


def test_pct_is_reported(example: DNSServer, resolver: Resolver) -> None:
    example.set("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; pct=25")
    assert check(message(), resolver).dmarc.pct == 25


@pytest.mark.parametrize(
    "extra_from",
    [
        "",  # no From at all
        "From: b@example.test\r\n",  # two From fields
    ],
)
def test_not_exactly_one_from_is_permerror(
    example: DNSServer, resolver: Resolver, extra_from: str
) -> None:
    msg = message(extra=extra_from)
    if not extra_from:
        msg = msg.replace(b"From: Alice <alice@example.test>\r\n", b"")
    results = check(msg, resolver)
    assert results.dmarc.result == "permerror"
    assert not is_authenticated(results)


def test_several_from_domains_report_the_worst(example: DNSServer, resolver: Resolver) -> None:
    example.set("_dmarc.other.test", "TXT", "v=DMARC1; p=quarantine")
    results = check(message("a@example.test, b@other.test"), resolver)
    d = results.dmarc
    assert (d.result, d.from_domain, d.policy) == ("fail", "other.test", "quarantine")


def test_unknown_tld_domains_are_not_aligned_with_each_other(
    dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey
) -> None:
    """a.test and b.test are different organizations (the PSL's default rule "*")."""
    publish(dns_server, rsa, "b.test")
    dns_server.set("_dmarc.a.test", "TXT", "v=DMARC1; p=reject")
    results = check(sign(message("x@a.test"), rsa, "b.test"), resolver, mail_from="x@b.test")
    assert results.dkim[0].result == "pass"
    assert (results.dmarc.result, results.dmarc.dkim_aligned) == ("fail", False)


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("example.test", "example.test"),
        ("a.b.example.test", "example.test"),
        ("mail.example.co.uk", "example.co.uk"),
        ("co.uk", "co.uk"),
        ("www.Example.COM.", "example.com"),
        ("user.github.io", "user.github.io"),
        ("a.b.bücher.de", "xn--bcher-kva.de"),
    ],
)
def test_org_domain(domain: str, org: str) -> None:
    assert org_domain(domain) == org
