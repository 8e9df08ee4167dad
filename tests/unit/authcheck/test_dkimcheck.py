"""DKIM verdicts: messages signed by dkimpy, keys published in the local DNS server."""

from __future__ import annotations

import importlib.util

import pytest

from mailcase.dns import Resolver
from tests.support.dnsserver import DNSServer
from tests.unit.authcheck.helpers import (
    DKIMKey,
    check,
    ed25519_key,
    message,
    publish,
    sign,
)

HAVE_NACL = importlib.util.find_spec("nacl") is not None


def test_rsa_2048_signature_passes(dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey) -> None:
    publish(dns_server, rsa, "example.test")
    results = check(sign(message(), rsa, "example.test"), resolver)
    (d,) = results.dkim
    assert (d.result, d.domain, d.selector, d.algorithm) == (
        "pass",
        "example.test",
        "sel",
        "rsa-sha256",
    )
    assert d.b and d.identity == "@example.test"
    # The key was fetched from OUR server, through mailcase's resolver.
    assert dns_server.queries_for("sel._domainkey.example.test", "TXT")


def test_lf_line_endings_verify_too(
    dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey
) -> None:
    publish(dns_server, rsa, "example.test")
    signed = sign(message(), rsa, "example.test").replace(b"\r\n", b"\n")
    assert check(signed, resolver).dkim[0].result == "pass"


def test_modified_body_fails(dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey) -> None:
    publish(dns_server, rsa, "example.test")
    signed = sign(message(), rsa, "example.test").replace(b"order", b"invoice")
    (d,) = check(signed, resolver).dkim
    assert d.result == "fail"
    assert d.reason == "body hash mismatch"


def test_modified_signed_header_fails(
    dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey
) -> None:
    publish(dns_server, rsa, "example.test")
    signed = sign(message(), rsa, "example.test").replace(b"Order 1027", b"Order 9999")
    (d,) = check(signed, resolver).dkim
    assert d.result == "fail"
    assert d.reason == "signature did not verify"


def test_signature_by_another_key_fails(
    dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey, other_rsa: DKIMKey
) -> None:
    publish(dns_server, other_rsa, "example.test")  # e.g. rotated in DNS too early
    (d,) = check(sign(message(), rsa, "example.test"), resolver).dkim
    assert d.result == "fail"


def test_missing_key_is_permerror(dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey) -> None:
    (d,) = check(sign(message(), rsa, "example.test"), resolver).dkim
    assert d.result == "permerror"
    assert d.reason == "no key for signature"


def test_revoked_key_is_permerror(dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey) -> None:
    dns_server.set("sel._domainkey.example.test", "TXT", "v=DKIM1; k=rsa; p=")  # RFC 6376 §3.6.1
    (d,) = check(sign(message(), rsa, "example.test"), resolver).dkim
    assert d.result == "permerror"
    assert d.reason.startswith("key not usable")


def test_garbage_key_is_permerror(dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey) -> None:
    dns_server.set("sel._domainkey.example.test", "TXT", "v=DKIM1; k=rsa; p=bm90IGEga2V5")
    (d,) = check(sign(message(), rsa, "example.test"), resolver).dkim
    assert d.result == "permerror"


@pytest.mark.parametrize("how", ["servfail", "timeout"])
def test_key_lookup_failure_is_temperror(dns_server: DNSServer, rsa: DKIMKey, how: str) -> None:
    publish(dns_server, rsa, "example.test")
    if how == "servfail":
        dns_server.servfail("sel._domainkey.example.test")
    else:
        dns_server.drop("sel._domainkey.example.test")
    resolver = Resolver([dns_server.address], timeout=0.3)
    (d,) = check(sign(message(), rsa, "example.test"), resolver).dkim
    assert d.result == "temperror"
    assert "key lookup failed" in d.reason


def test_unsigned_message_has_no_dkim_results(resolver: Resolver) -> None:
    results = check(message(), resolver)
    assert results.dkim == ()
    assert "dkim=none" in results.header()


def test_every_signature_gets_its_own_verdict(
    dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey, other_rsa: DKIMKey
) -> None:
    publish(dns_server, rsa, "example.test")
    # A mailing list or ESP adds its own signature; its key is not published.
    signed = sign(sign(message(), rsa, "example.test"), other_rsa, "esp.test", "s2")
    results = check(signed, resolver)
    by_domain = {d.domain: d.result for d in results.dkim}
    assert by_domain == {"esp.test": "permerror", "example.test": "pass"}
    assert results.dmarc.dkim_aligned  # the aligned one passed


def test_one_key_lookup_for_several_signatures_with_the_same_key(
    dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey
) -> None:
    publish(dns_server, rsa, "example.test")
    signed = sign(sign(message(), rsa, "example.test"), rsa, "example.test")
    assert [d.result for d in check(signed, resolver).dkim] == ["pass", "pass"]
    assert len(dns_server.queries_for("sel._domainkey.example.test", "TXT")) == 1


def test_rsa_sha1_is_not_accepted(dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey) -> None:
    publish(dns_server, rsa, "example.test")
    results = check(sign(message(), rsa, "example.test", algorithm=b"rsa-sha1"), resolver)
    assert results.dkim[0].result == "policy"  # RFC 8301 §3.1
    assert not results.dmarc.dkim_aligned


def test_unparsable_signature_is_neutral(resolver: Resolver) -> None:
    msg = b"DKIM-Signature: this is not a tag list\r\n" + message()
    (d,) = check(msg, resolver).dkim
    assert d.result == "neutral"


def test_signature_missing_tags_fails(resolver: Resolver) -> None:
    msg = b"DKIM-Signature: v=1; d=example.test; s=sel\r\n" + message()
    (d,) = check(msg, resolver).dkim
    assert d.result == "fail"
    assert "missing" in d.reason


def test_ed25519_without_pynacl_is_neutral(dns_server: DNSServer, resolver: Resolver) -> None:
    if HAVE_NACL:
        pytest.skip("PyNaCl is installed: the ed25519 pass test covers this path")
    dns_server.set("ed._domainkey.example.test", "TXT", ed25519_key().txt)
    # dkimpy cannot even sign ed25519 without PyNaCl: a well-formed signature by hand.
    sig = (
        b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/simple; d=example.test; s=ed;"
        b" h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n"
    )
    (d,) = check(sig + message(), resolver).dkim
    assert d.result == "neutral"
    assert "PyNaCl" in d.reason


@pytest.mark.skipif(not HAVE_NACL, reason="dkimpy needs PyNaCl for ed25519 (not a dependency)")
def test_ed25519_signature_passes(dns_server: DNSServer, resolver: Resolver) -> None:
    key = ed25519_key()
    publish(dns_server, key, "example.test", "ed")
    (d,) = check(sign(message(), key, "example.test", "ed"), resolver).dkim
    assert (d.result, d.algorithm) == ("pass", "ed25519-sha256")
    tampered = sign(message(), key, "example.test", "ed").replace(b"Order 1027", b"Order 1")
    assert check(tampered, resolver).dkim[0].result == "fail"


def test_many_signatures_are_bounded(
    dns_server: DNSServer, resolver: Resolver, rsa: DKIMKey
) -> None:
    msg = message()
    for i in range(12):
        msg = sign(msg, rsa, f"d{i}.test")
    results = check(msg, resolver).dkim
    assert len(results) == 12
    assert [d.result for d in results[10:]] == ["neutral", "neutral"]
    looked_up = {q.name for q in dns_server.queries if "._domainkey." in q.name}
    assert len(looked_up) == 10


@pytest.mark.parametrize(
    "raw",
    [
        b"DKIM-Signature: v=1; a=rsa-sha256; d=b.test; s=s; h=from; bh=AAAA; b=AAAA; l=abc\r\n",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=b.test; s=s\xff; h=from; bh=AAAA; b=AAAA\r\n",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=; s=; h=from; bh=AAAA; b=AAAA\r\n",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=b.test; s=s; h=from; bh=AAAA; b=AAAA; x=1\r\n",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=b.test; s=s; h=from; bh=AAAA; b=AA AA\r\n",
    ],
)
def test_hostile_signatures_get_a_verdict_not_an_exception(
    dns_server: DNSServer, resolver: Resolver, raw: bytes
) -> None:
    dns_server.set("s._domainkey.b.test", "TXT", "v=DKIM1; p=AAAA")
    (d,) = check(raw + message(), resolver).dkim
    assert d.result in ("fail", "permerror", "neutral")


def test_unparsable_unsigned_message_has_no_dkim_results(resolver: Resolver) -> None:
    assert check(b"no header here", resolver).dkim == ()
