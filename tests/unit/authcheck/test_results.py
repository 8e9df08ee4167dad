"""authenticate() end to end, ARC, and the Authentication-Results header (RFC 8601)."""

from __future__ import annotations

import json

import authres  # type: ignore[import-untyped]
import dkim  # type: ignore[import-untyped]
import pytest

import mailcase.authcheck
from mailcase.authcheck import (
    ARCResult,
    AuthResults,
    DKIMResult,
    DMARCResult,
    SPFResult,
    authenticate_async,
    is_authenticated,
    remove_own_results,
)
from mailcase.dns import Resolver
from tests.support.dnsserver import DNSServer
from tests.unit.authcheck.helpers import AUTHSERV_ID, DKIMKey, check, message, publish, sign


def parse(value: str) -> authres.AuthenticationResultsHeader:
    """An independent parser (authres) reads what we wrote."""
    return authres.AuthenticationResultsHeader.parse("Authentication-Results: " + value)


def props(result: authres.AuthenticationResult) -> dict[str, str]:
    return {f"{p.type}.{p.name}": p.value for p in result.properties}


@pytest.fixture
def example(dns_server: DNSServer, rsa: DKIMKey) -> DNSServer:
    dns_server.load(
        {
            "example.test": {"TXT": "v=spf1 ip4:127.0.0.0/8 -all"},
            "_dmarc.example.test": {"TXT": "v=DMARC1; p=reject"},
        }
    )
    publish(dns_server, rsa, "example.test")
    return dns_server


def test_public_api_is_all() -> None:
    public = {
        n
        for n in dir(mailcase.authcheck)
        if not n.startswith("_")
        and n not in {"check", "dkimcheck", "dmarc", "orgdomain", "results", "spfcheck", "trusted"}
    }
    assert public == set(mailcase.authcheck.__all__)


def test_header_round_trips_and_names_the_authserv_id(
    example: DNSServer, resolver: Resolver, rsa: DKIMKey
) -> None:
    results = check(sign(message(), rsa, "example.test"), resolver)
    header = parse(results.header())
    assert header.authserv_id == AUTHSERV_ID
    by_method = {r.method: r for r in header.results}
    assert {m: r.result for m, r in by_method.items()} == {
        "spf": "pass",
        "dkim": "pass",
        "dmarc": "pass",
    }
    assert props(by_method["spf"]) == {"smtp.mailfrom": "example.test"}
    d = results.dkim[0]
    assert props(by_method["dkim"]) == {
        "header.d": "example.test",
        "header.i": "@example.test",
        "header.s": "sel",
        "header.a": "rsa-sha256",
        "header.b": d.b,
    }
    assert props(by_method["dmarc"]) == {"header.from": "example.test"}


def test_failures_carry_reasons_that_parse(
    example: DNSServer, resolver: Resolver, rsa: DKIMKey
) -> None:
    signed = sign(message(), rsa, "example.test").replace(b"order", b"invoice")
    results = check(signed, resolver, client_ip="198.51.100.7")
    header = parse(results.header())
    by_method = {r.method: r for r in header.results}
    assert by_method["dkim"].result == "fail"
    assert by_method["dkim"].reason == "body hash mismatch"
    assert by_method["spf"].result == "fail"
    assert by_method["dmarc"].result == "fail"
    assert "dmarc=fail (p=reject)" in results.header()


def test_header_folding() -> None:
    r = AuthResults(
        "mx.test",
        SPFResult("pass", "example.test", "mailfrom", "a@example.test", "h.test"),
        (DKIMResult("pass", "example.test", "sel"),),
        DMARCResult("pass", "example.test", policy="none"),
    )
    folded = r.header()
    assert folded.split(";\r\n\t")[0] == "mx.test"
    assert all(len(line) < 200 for line in folded.split("\r\n"))
    assert r.header(fold=False) == folded.replace(";\r\n\t", "; ")
    assert parse(r.header(fold=False)).results[1].method == "dkim"


def test_helo_identity_is_named_smtp_helo() -> None:
    r = AuthResults("mx.test", SPFResult("pass", "h.example.test", "helo", "", "h.example.test"))
    (spf, *_rest) = parse(r.header()).results
    assert props(spf) == {"smtp.helo": "h.example.test"}


def test_hostile_values_cannot_inject_header_lines() -> None:
    r = AuthResults(
        "mx.test",
        SPFResult("fail", "example.test", "mailfrom", "x", "h", reason='evil"\r\nX-Injected: 1'),
        (DKIMResult("fail", 'a;b"c', "s\r\nX-Injected: 2", b="ab/c+d=", reason="x\\y"),),
        DMARCResult("fail", "ex(ample).test", policy="reject"),
    )
    value = r.header(fold=False)
    assert "\r" not in value and "\n" not in value
    # Quoted where RFC 8601 §2.2 asks (token or domain otherwise), quotes escaped.
    assert 'reason="evil\\" X-Injected: 1"' in value
    assert 'header.d="a;b\\"c"' in value
    assert 'header.s="s X-Injected: 2"' in value
    assert 'reason="x\\\\y"' in value
    assert 'header.from="ex(ample).test"' in value
    # A lenient parser still finds every method and result.
    header = parse(value)
    assert [(x.method, x.result) for x in header.results] == [
        ("spf", "fail"),
        ("dkim", "fail"),
        ("dmarc", "fail"),
    ]


def test_as_dict_is_json(example: DNSServer, resolver: Resolver, rsa: DKIMKey) -> None:
    data = check(sign(message(), rsa, "example.test"), resolver).as_dict()
    again = json.loads(json.dumps(data))
    assert again["dmarc"]["result"] == "pass"
    assert again["dkim"][0]["domain"] == "example.test"
    assert again["authenticated"] is True


@pytest.mark.parametrize(
    ("dmarc", "expected"),
    [
        (DMARCResult("pass", "e.test"), True),
        (DMARCResult("none", "e.test", spf_aligned=True), True),
        (DMARCResult("temperror", "e.test", dkim_aligned=True), True),
        (DMARCResult("fail", "e.test", policy="reject"), False),
        (DMARCResult("none", "e.test"), False),
        (DMARCResult("permerror", ""), False),
    ],
)
def test_is_authenticated(dmarc: DMARCResult, expected: bool) -> None:
    spf = SPFResult("none", "", "mailfrom", "", "")
    assert is_authenticated(AuthResults("mx", spf, (), dmarc)) is expected


async def test_async_variant(example: DNSServer, resolver: Resolver, rsa: DKIMKey) -> None:
    results = await authenticate_async(
        sign(message(), rsa, "example.test"),
        client_ip="127.0.0.1",
        helo="mail.example.test",
        mail_from="bounce@example.test",
        resolver=resolver,
        authserv_id=AUTHSERV_ID,
    )
    assert is_authenticated(results)
    assert results.spf.result == "pass"  # the SPF resolver context reached the worker thread


# -- ARC ---------------------------------------------------------------------------------------


def arc_seal(msg: bytes, key: DKIMKey, domain: str) -> bytes:
    """What a mailing list does: record its own verdicts, then seal them (RFC 8617)."""
    with_ar = f"Authentication-Results: {domain}; spf=pass smtp.mailfrom=example.test\r\n"
    msg = with_ar.encode() + msg
    sets = dkim.arc_sign(
        msg,
        b"arc",
        domain.encode(),
        key.private,
        domain.encode(),
        include_headers=[b"from", b"to", b"subject", b"date"],
    )
    return b"".join(sets) + msg


def test_arc_chain_passes(dns_server: DNSServer, resolver: Resolver, other_rsa: DKIMKey) -> None:
    publish(dns_server, other_rsa, "lists.test", "arc")
    results = check(arc_seal(message(), other_rsa, "lists.test"), resolver)
    assert results.arc == ARCResult("pass", 1)
    assert "arc=pass (i=1)" in results.header()
    assert any(r.method == "arc" and r.result == "pass" for r in parse(results.header()).results)


def test_arc_chain_broken_by_a_later_change_fails(
    dns_server: DNSServer, resolver: Resolver, other_rsa: DKIMKey
) -> None:
    publish(dns_server, other_rsa, "lists.test", "arc")
    sealed = arc_seal(message(), other_rsa, "lists.test").replace(b"Order 1027", b"Order 1")
    results = check(sealed, resolver)
    assert results.arc is not None and results.arc.result == "fail"


def test_arc_key_lookup_failure(dns_server: DNSServer, other_rsa: DKIMKey) -> None:
    publish(dns_server, other_rsa, "lists.test", "arc")
    dns_server.servfail("arc._domainkey.lists.test")
    resolver = Resolver([dns_server.address], timeout=0.5)
    results = check(arc_seal(message(), other_rsa, "lists.test"), resolver)
    assert results.arc is not None and results.arc.result == "fail"
    assert "temporarily" in results.arc.reason


@pytest.mark.parametrize(
    "seal",
    [
        # dkimpy raises IndexError on the space before ";" (its AMS lookup wants " i=1;")
        b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=x.test; s=s; b=AAAA\r\n"
        b"ARC-Message-Signature: i=1 ; a=rsa-sha256; d=x.test; s=s; h=from; bh=AAAA; b=AAAA\r\n"
        b"ARC-Authentication-Results: i=1; x.test; spf=pass\r\n",
        b"ARC-Seal: i=1\r\n",  # an incomplete set
    ],
)
def test_malformed_arc_chain_fails_without_an_exception(resolver: Resolver, seal: bytes) -> None:
    results = check(seal + message(), resolver)
    assert results.arc is not None and results.arc.result == "fail"


def test_no_arc_headers_no_arc_result(resolver: Resolver) -> None:
    results = check(message(), resolver)
    assert results.arc is None
    assert "arc" not in {r.method for r in parse(results.header()).results}


# -- our own results arriving from outside ---------------------------------------------------------


def test_remove_own_results_drops_forgeries_only() -> None:
    msg = (
        b"Authentication-Results: MX.mailcase.test; dmarc=pass header.from=bank.test\r\n"
        b"Authentication-Results: (comment) mx.mailcase.test;\r\n\tspf=pass\r\n"
        b"Authentication-Results: relay.example.net; spf=fail\r\n"
        b"X-Other: mx.mailcase.test;\r\n"
        + message()
        + b"Authentication-Results: mx.mailcase.test\r\n"
    )
    cleaned = remove_own_results(msg, AUTHSERV_ID)
    head, body = cleaned.split(b"\r\n\r\n", 1)
    assert b"relay.example.net" in head
    assert b"X-Other" in head
    assert b"MX.mailcase.test" not in head and b"(comment)" not in head
    assert b"\tspf=pass" not in head
    assert body.endswith(b"Authentication-Results: mx.mailcase.test\r\n")  # body untouched
