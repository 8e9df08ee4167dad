"""mailcase.dns.Resolver against the local DNS server: typed answers, failure classes, TCP."""

from __future__ import annotations

import ipaddress
import time

import pytest

import mailcase.dns
from mailcase.dns import (
    DNSLookupError,
    DNSTimeout,
    InvalidName,
    MXRecord,
    NoData,
    NoSuchRecord,
    NXDomain,
    Resolver,
    ServerFailure,
    TemporaryDNSError,
    TLSARecord,
    parse_nameserver,
    tlsa_name,
)
from mailcase.errors import ConfigError, MailcaseError
from tests.support.dnsserver import DNSServer, Zone

DIGEST = bytes(range(32))  # a SHA-256-sized TLSA association (dnspython checks the length)

ZONE: Zone = {
    "example.test": {
        "A": ["192.0.2.10", "192.0.2.11"],
        "AAAA": "2001:db8::10",
        "MX": [(20, "mx2.example.test"), (10, "mx1.example.test")],
        "TXT": ["v=spf1 -all", "other"],
    },
    "mx1.example.test": {"A": "192.0.2.25"},
    "www.example.test": {"CNAME": "example.test"},
    "nomail.test": {"MX": (0, ".")},
    "_mta-sts.example.test": {"TXT": "v=STSv1; id=20240101"},
    "_25._tcp.mx1.example.test": {"TLSA": [(3, 1, 1, DIGEST)]},
    "10.2.0.192.in-addr.arpa": {"PTR": "mx1.example.test"},
    "deep.below.example.test": {"A": "192.0.2.99"},  # makes below.example.test exist
}


@pytest.fixture
def zone(dns_server: DNSServer) -> DNSServer:
    dns_server.load(ZONE)
    return dns_server


def test_public_api_is_all() -> None:
    exported = {n for n in dir(mailcase.dns) if not n.startswith("_")} - {"resolver"}
    assert exported == set(mailcase.dns.__all__)


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", ("192.0.2.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:5300", ("::1", 5300)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
        ("2001:db8::1", ("2001:db8::1", 53)),
        (" 10.0.0.1:53 ", ("10.0.0.1", 53)),
    ],
)
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize(
    "text", ["dns.example.com", "dns.example.com:53", "1.2.3.4:0", "1.2.3.4:99999", "[::1", "x:y"]
)
def test_bad_nameserver_is_a_config_error_naming_the_key(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        Resolver([text])
    assert info.value.key == "dns.nameservers"
    assert repr(text) in str(info.value)


def test_one_string_instead_of_a_list_is_refused() -> None:
    with pytest.raises(ConfigError):
        Resolver("127.0.0.1:53")  # a str is a Sequence[str]: refused at run time


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError) as info:
        Resolver(["127.0.0.1"], timeout=0)
    assert info.value.key == "dns.timeout"


def test_empty_nameservers_use_the_system_resolver() -> None:
    try:
        r = Resolver([])  # reads /etc/resolv.conf; asks nothing
    except ConfigError as exc:  # a machine without one: said at start, with the key
        assert exc.key == "dns.nameservers"
        return
    assert r.nameservers == ()
    assert "system" in repr(r)


# -- typed answers ------------------------------------------------------------------------------


def test_nameserver_override_sends_queries_to_the_configured_server(
    zone: DNSServer, resolver: Resolver
) -> None:
    answer = resolver.a_sync("Example.TEST.")
    assert answer.records == (
        ipaddress.IPv4Address("192.0.2.10"),
        ipaddress.IPv4Address("192.0.2.11"),
    )
    assert answer.name == "example.test"
    assert answer.ttl == 60
    assert zone.queries_for("example.test", "A")
    # EDNS0 with a payload that avoids fragmentation, and the AD bit asked for (RFC 6840).
    q = zone.queries_for("example.test", "A")[0]
    assert (q.transport, q.edns_payload, q.ad, q.do) == ("udp", 1232, True, False)


def test_record_types(zone: DNSServer, resolver: Resolver) -> None:
    assert resolver.aaaa_sync("example.test").records == (ipaddress.IPv6Address("2001:db8::10"),)
    mx = resolver.mx_sync("example.test").records
    assert mx == (MXRecord(10, "mx1.example.test"), MXRecord(20, "mx2.example.test"))
    assert not any(m.is_null for m in mx)
    txt = resolver.txt_sync("example.test").records
    assert sorted(t.text for t in txt) == ["other", "v=spf1 -all"]
    assert resolver.txt_sync("_mta-sts.example.test").records[0].value == b"v=STSv1; id=20240101"
    tlsa = resolver.tlsa_sync(tlsa_name("mx1.example.test", 25)).records
    assert tlsa == (TLSARecord(3, 1, 1, DIGEST),)
    assert resolver.cname_sync("www.example.test").records == ("example.test",)
    assert resolver.ptr_sync("192.0.2.10").records == ("mx1.example.test",)


def test_null_mx(zone: DNSServer, resolver: Resolver) -> None:
    (mx,) = resolver.mx_sync("nomail.test").records
    assert mx.is_null and mx.preference == 0  # RFC 7505


def test_cname_is_followed(zone: DNSServer, resolver: Resolver) -> None:
    answer = resolver.a_sync("www.example.test")
    assert answer.canonical_name == "example.test"
    assert len(answer.records) == 2


async def test_async_lookups(zone: DNSServer, resolver: Resolver) -> None:
    assert (await resolver.mx("example.test")).records[0] == MXRecord(10, "mx1.example.test")
    assert (await resolver.a("mx1.example.test")).records == (ipaddress.IPv4Address("192.0.2.25"),)
    assert (await resolver.aaaa("example.test")).records
    assert (await resolver.txt("example.test")).records
    assert (await resolver.tlsa("_25._tcp.mx1.example.test")).records[0].usage == 3
    assert (await resolver.cname("www.example.test")).records == ("example.test",)
    assert (await resolver.ptr("192.0.2.10")).records == ("mx1.example.test",)
    with pytest.raises(NXDomain):
        await resolver.mx("nope.test")
    zone.servfail("broken.test")
    with pytest.raises(ServerFailure):
        await resolver.a("broken.test")


def test_changes_to_the_zone_are_seen_at_once(zone: DNSServer, resolver: Resolver) -> None:
    assert resolver.a_sync("mx1.example.test").records[0] == ipaddress.IPv4Address("192.0.2.25")
    zone.set("mx1.example.test", "A", "192.0.2.26")
    assert resolver.a_sync("mx1.example.test").records[0] == ipaddress.IPv4Address("192.0.2.26")
    zone.add("new.example.test", "A", "192.0.2.30")
    assert resolver.a_sync("new.example.test").records
    zone.remove("new.example.test")
    with pytest.raises(NXDomain):
        resolver.a_sync("new.example.test")
    # mx1 still has a TLSA name below it, so without its own records it is NODATA.
    zone.remove("mx1.example.test")
    with pytest.raises(NoData):
        resolver.a_sync("mx1.example.test")


# -- DNSSEC: the AD bit is reported, not validated ----------------------------------------------


def test_ad_bit_is_reported_when_the_resolver_sets_it(zone: DNSServer, resolver: Resolver) -> None:
    name = tlsa_name("mx1.example.test")
    assert resolver.tlsa_sync(name).authenticated is False
    zone.secure(name)
    assert resolver.tlsa_sync(name).authenticated is True
    assert resolver.a_sync("example.test").authenticated is False


def test_ad_bit_of_a_denial_of_existence(zone: DNSServer, resolver: Resolver) -> None:
    # DANE: an authenticated "no TLSA here" differs from an insecure one (RFC 7672 §2.2).
    name = tlsa_name("mx2.example.test")
    with pytest.raises(NXDomain) as info:
        resolver.tlsa_sync(name)
    assert info.value.authenticated is False
    zone.secure(name)
    with pytest.raises(NXDomain) as info:
        resolver.tlsa_sync(name)
    assert info.value.authenticated is True
    zone.secure("mx1.example.test")
    with pytest.raises(NoData) as nodata:
        resolver.tlsa_sync("mx1.example.test")
    assert nodata.value.authenticated is True


# -- failure classes ------------------------------------------------------------------------------


def test_nxdomain_is_permanent(zone: DNSServer, resolver: Resolver) -> None:
    with pytest.raises(NXDomain) as info:
        resolver.mx_sync("nonexistent.example.test")
    err = info.value
    assert isinstance(err, NoSuchRecord) and isinstance(err, MailcaseError)
    assert err.temporary is False
    assert (err.name, err.rdtype) == ("nonexistent.example.test", "MX")


def test_name_without_that_type_is_nodata(zone: DNSServer, resolver: Resolver) -> None:
    with pytest.raises(NoData) as info:
        resolver.mx_sync("mx1.example.test")
    assert info.value.temporary is False
    # An empty non-terminal exists (RFC 8020): NODATA, not NXDOMAIN.
    with pytest.raises(NoData):
        resolver.a_sync("below.example.test")


def test_invalid_names_are_refused_before_asking(zone: DNSServer, resolver: Resolver) -> None:
    before = len(zone.queries)
    for name in ("a..b.test", "x" * 64 + ".test", ("a" * 60 + ".") * 5 + "test"):
        with pytest.raises(InvalidName):
            resolver.txt_sync(name)
    with pytest.raises(InvalidName):
        resolver.ptr_sync("not-an-address")
    assert len(zone.queries) == before


@pytest.mark.parametrize("rcode", ["SERVFAIL", "REFUSED"])
def test_server_errors_are_temporary(zone: DNSServer, resolver: Resolver, rcode: str) -> None:
    zone.fail("example.test", rcode)
    with pytest.raises(ServerFailure) as info:
        resolver.mx_sync("example.test")
    assert info.value.temporary is True
    assert isinstance(info.value, TemporaryDNSError)
    zone.heal("example.test")
    assert resolver.mx_sync("example.test").records


def test_servfail_for_one_type_only(zone: DNSServer, resolver: Resolver) -> None:
    zone.servfail("example.test", "TXT")
    assert resolver.a_sync("example.test").records
    with pytest.raises(ServerFailure):
        resolver.txt_sync("example.test")


def test_no_answer_is_a_timeout(zone: DNSServer) -> None:
    resolver = Resolver([zone.address], timeout=0.4)
    zone.drop("example.test")
    started = time.monotonic()
    with pytest.raises(DNSTimeout) as info:
        resolver.a_sync("example.test")
    assert info.value.temporary is True
    assert time.monotonic() - started < 1.5  # bounded by the configured timeout


def test_a_slow_answer_within_the_timeout_arrives(zone: DNSServer) -> None:
    resolver = Resolver([zone.address], timeout=2.0)
    zone.delay("example.test", 0.2)
    assert resolver.a_sync("example.test").records


def test_a_slow_answer_beyond_the_timeout_is_a_timeout(zone: DNSServer) -> None:
    resolver = Resolver([zone.address], timeout=0.3)
    zone.delay("example.test", 1.0)
    with pytest.raises(DNSTimeout):
        resolver.a_sync("example.test")


def test_unreachable_server_is_temporary(dns_server: DNSServer) -> None:
    port = dns_server.port
    dns_server.stop()
    resolver = Resolver([f"127.0.0.1:{port}"], timeout=0.5)
    with pytest.raises(TemporaryDNSError):
        resolver.a_sync("example.test")


def test_every_failure_is_either_permanent_or_temporary() -> None:
    for cls in (NXDomain, NoData, InvalidName, DNSTimeout, ServerFailure):
        assert issubclass(cls, DNSLookupError)
        assert issubclass(cls, NoSuchRecord) != issubclass(cls, TemporaryDNSError)


# -- TCP ---------------------------------------------------------------------------------------------


def test_big_txt_answer_falls_back_to_tcp(zone: DNSServer, resolver: Resolver) -> None:
    big = "v=spf1 " + " ".join(f"ip4:198.51.100.{i}" for i in range(200)) + " -all"
    assert len(big) > 3000
    zone.set("big.example.test", "TXT", big)
    (record,) = resolver.txt_sync("big.example.test").records
    assert record.text == big
    assert all(len(s) <= 255 for s in record.strings)
    transports = [q.transport for q in zone.queries_for("big.example.test", "TXT")]
    assert transports == ["udp", "tcp"]  # truncated over UDP (TC), then asked again over TCP


def test_small_answers_stay_on_udp(zone: DNSServer, resolver: Resolver) -> None:
    resolver.txt_sync("example.test")
    assert [q.transport for q in zone.queries_for("example.test", "TXT")] == ["udp"]


def test_stop_with_an_answer_still_delayed_is_clean() -> None:
    server = DNSServer({"slow.test": {"A": "192.0.2.1"}}).start()
    server.delay("slow.test", 5)
    resolver = Resolver([server.address], timeout=0.2)
    with pytest.raises(DNSTimeout):
        resolver.a_sync("slow.test")
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0
    assert server.errors == []
