"""SPF verdicts: pyspf evaluating policies served by the local DNS server."""

from __future__ import annotations

import threading

import pytest
import spf  # type: ignore[import-untyped]

from mailcase.authcheck.spfcheck import check_spf
from mailcase.dns import Resolver
from tests.support.dnsserver import DNSServer


def spf_of(
    resolver: Resolver,
    *,
    ip: str = "127.0.0.1",
    mail_from: str = "bounce@example.test",
    helo: str = "mail.example.test",
) -> tuple[str, str]:
    r = check_spf(client_ip=ip, helo=helo, mail_from=mail_from, resolver=resolver)
    return r.result, r.domain


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("v=spf1 ip4:127.0.0.0/8 -all", "pass"),
        ("v=spf1 ip4:192.0.2.0/24 -all", "fail"),
        ("v=spf1 ip4:192.0.2.0/24 ~all", "softfail"),
        ("v=spf1 ip4:192.0.2.0/24 ?all", "neutral"),
        ("v=spf1 -ip4:127.0.0.1 +all", "fail"),
        ("v=spf1 a -all", "pass"),
        ("v=spf1 mx -all", "pass"),
        ("v=spf1 a:other.example.test -all", "fail"),
        ("v=spf1 exists:%{i}._ip.example.test -all", "pass"),
        ("v=spf1 ip4:127.0.0.0/8 bogus:mechanism -all", "permerror"),
        ("v=spf1 include:nospf.test -all", "permerror"),  # RFC 7208 §5.2: none → permerror
    ],
)
def test_policies(dns_server: DNSServer, resolver: Resolver, policy: str, expected: str) -> None:
    dns_server.load(
        {
            "example.test": {"TXT": policy, "A": "127.0.0.1", "MX": (10, "mx.example.test")},
            "mx.example.test": {"A": "127.0.0.1"},
            "other.example.test": {"A": "192.0.2.7"},
            "127.0.0.1._ip.example.test": {"A": "127.0.0.2"},
            "nospf.test": {"A": "192.0.2.1"},
        }
    )
    assert spf_of(resolver) == (expected, "example.test")


def test_ipv6(dns_server: DNSServer, resolver: Resolver) -> None:
    dns_server.set("example.test", "TXT", "v=spf1 ip6:2001:db8::/32 -all")
    assert spf_of(resolver, ip="2001:db8::25")[0] == "pass"
    assert spf_of(resolver, ip="2001:db9::25")[0] == "fail"


def test_include(dns_server: DNSServer, resolver: Resolver) -> None:
    dns_server.set("example.test", "TXT", "v=spf1 include:_spf.esp.test -all")
    dns_server.set("_spf.esp.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    assert spf_of(resolver) == ("pass", "example.test")
    assert spf_of(resolver, ip="198.51.100.1")[0] == "fail"


def test_redirect(dns_server: DNSServer, resolver: Resolver) -> None:
    dns_server.set("example.test", "TXT", "v=spf1 redirect=_spf.example.test")
    dns_server.set("_spf.example.test", "TXT", "v=spf1 ip4:127.0.0.1 ~all")
    assert spf_of(resolver)[0] == "pass"
    assert spf_of(resolver, ip="198.51.100.1")[0] == "softfail"


def test_no_policy_is_none(dns_server: DNSServer, resolver: Resolver) -> None:
    dns_server.set("example.test", "TXT", "some-site-verification=abc")
    assert spf_of(resolver) == ("none", "example.test")
    assert spf_of(resolver, mail_from="x@nonexistent.test") == ("none", "nonexistent.test")


def test_reverse_path_without_at_sign_is_a_domain(
    dns_server: DNSServer, resolver: Resolver
) -> None:
    dns_server.set("example.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    assert spf_of(resolver, mail_from="example.test", helo="other.test") == ("pass", "example.test")


def test_internationalized_domain(dns_server: DNSServer, resolver: Resolver) -> None:
    dns_server.set("xn--exmple-cua.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    assert spf_of(resolver, mail_from="ü@exämple.test") == ("pass", "xn--exmple-cua.test")


def test_two_policies_are_permerror(dns_server: DNSServer, resolver: Resolver) -> None:
    dns_server.set("example.test", "TXT", "v=spf1 -all", "v=spf1 +all")
    assert spf_of(resolver)[0] == "permerror"  # RFC 7208 §4.5


def test_dns_failure_is_temperror(dns_server: DNSServer, resolver: Resolver) -> None:
    dns_server.servfail("example.test", "TXT")
    r = check_spf(
        client_ip="127.0.0.1", helo="h.test", mail_from="a@example.test", resolver=resolver
    )
    assert r.result == "temperror"


def test_dns_failure_in_an_include_is_temperror(dns_server: DNSServer, resolver: Resolver) -> None:
    dns_server.set("example.test", "TXT", "v=spf1 include:_spf.esp.test -all")
    dns_server.servfail("_spf.esp.test")
    assert spf_of(resolver)[0] == "temperror"


def test_timeout_is_temperror(dns_server: DNSServer) -> None:
    dns_server.drop("example.test")
    resolver = Resolver([dns_server.address], timeout=0.3)
    assert spf_of(resolver)[0] == "temperror"


def test_null_reverse_path_checks_helo(dns_server: DNSServer, resolver: Resolver) -> None:
    # RFC 7208 §2.4: bounces (MAIL FROM:<>) are checked as postmaster@<HELO>.
    dns_server.set("mail.example.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    r = check_spf(client_ip="127.0.0.1", helo="mail.example.test", mail_from="", resolver=resolver)
    assert (r.result, r.identity, r.domain) == ("pass", "helo", "mail.example.test")
    r = check_spf(
        client_ip="127.0.0.1", helo="mail.example.test", mail_from="<>", resolver=resolver
    )
    assert r.identity == "helo"


def test_too_many_lookups_is_permerror(dns_server: DNSServer, resolver: Resolver) -> None:
    # RFC 7208 §4.6.4: at most 10 mechanisms that cause DNS lookups.
    policy = "v=spf1 " + " ".join(f"a:h{i}.example.test" for i in range(11)) + " -all"
    dns_server.set("example.test", "TXT", policy)
    for i in range(11):
        dns_server.set(f"h{i}.example.test", "A", "192.0.2.1")
    assert spf_of(resolver)[0] == "permerror"


def test_bad_client_ip_is_permerror(resolver: Resolver) -> None:
    assert spf_of(resolver, ip="not-an-ip")[0] == "permerror"


def test_pyspf_elsewhere_keeps_its_own_dns(
    dns_server: DNSServer, resolver: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside check_spf, the replaced `spf.DNSLookup` calls pyspf's original function."""
    from mailcase.authcheck import spfcheck

    dns_server.set("example.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    check_spf(client_ip="127.0.0.1", helo="h", mail_from="a@example.test", resolver=resolver)
    assert spf.DNSLookup is spfcheck._dispatch
    calls: list[tuple[str, str]] = []

    def fake_original(name: str, qtype: str, strict: object, timeout: object) -> list[object]:
        calls.append((name, qtype))
        return []

    monkeypatch.setattr(spfcheck, "_original", fake_original)
    assert spf.DNSLookup("elsewhere.test", "A", True, 1) == []  # no resolver in context
    assert calls == [("elsewhere.test", "A")]
    # Inside a check, our resolver answers and the original is not called.
    assert spf_of(resolver)[0] == "pass"
    assert calls == [("elsewhere.test", "A")]


def test_concurrent_checks_use_their_own_resolver() -> None:
    """The resolver travels in a context variable: threads do not see each other's."""
    with (
        DNSServer({"example.test": {"TXT": "v=spf1 ip4:127.0.0.0/8 -all"}}) as one,
        DNSServer({"example.test": {"TXT": "v=spf1 -all"}}) as two,
    ):
        resolvers = {"one": Resolver([one.address]), "two": Resolver([two.address])}
        results: dict[str, list[str]] = {"one": [], "two": []}

        def run(which: str) -> None:
            for _ in range(20):
                results[which].append(spf_of(resolvers[which])[0])

        threads = [threading.Thread(target=run, args=(w,)) for w in ("one", "two")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == {"one": ["pass"] * 20, "two": ["fail"] * 20}
