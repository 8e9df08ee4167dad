"""mailcase's one DNS resolver: typed answers, and failures split into permanent and temporary.

Why one resolver: sender authentication (SPF, DKIM, DMARC, ARC) and delivery (MX, A/AAAA,
TLSA, MTA-STS) must ask the same servers, the ones set in config (`dns.nameservers`), so that
an operator can point mailcase at a validating resolver and tests can point it at a local DNS
server. Nothing in mailcase calls dnspython's module-level `dns.resolver.resolve` (which reads
the system configuration) directly.

Why the split of failures: the delivery engine must know whether to retry (RFC 5321 §4.5.4.1)
and the authentication checks must tell `temperror` from `none`/`permerror` (RFC 7208 §2.6,
RFC 7489 §6.6.3, RFC 8601 §2.7). A lookup either returns an `Answer` with at least one record or
raises:

    DNSLookupError
    ├── NoSuchRecord          permanent: asking again will give the same answer
    │   ├── NXDomain            the name does not exist (RCODE 3)
    │   ├── NoData              the name exists, but has no record of this type
    │   └── InvalidName         the name cannot be asked at all (empty label, too long ...)
    └── TemporaryDNSError     try later
        ├── DNSTimeout          no answer within the configured time
        └── ServerFailure       every server failed: SERVFAIL, REFUSED, malformed reply ...

About DNSSEC: mailcase does not validate signatures itself. Every query sets the AD bit
(RFC 6840 §5.7: "give me the AD bit if you validated"), and each answer reports whether the
configured resolver set AD in its reply (`Answer.authenticated`). That is only worth something
when the path to that resolver is trusted (a validating resolver on the same host or a secured
link), which is the operator's promise, not something we can check (RFC 7672 §1.3).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.resolver
import dns.reversename

from mailcase.errors import ConfigError, MailcaseError

__all__ = [
    "Answer",
    "DNSLookupError",
    "DNSTimeout",
    "InvalidName",
    "MXRecord",
    "NXDomain",
    "NoData",
    "NoSuchRecord",
    "Resolver",
    "ServerFailure",
    "TLSARecord",
    "TXTRecord",
    "TemporaryDNSError",
    "parse_nameserver",
    "tlsa_name",
]

R = TypeVar("R")

# RFC 9715 / DNS flag day 2020: a payload that avoids IP fragmentation. Without EDNS a UDP
# answer is cut at 512 octets and every DKIM key would need TCP.
_EDNS_PAYLOAD = 1232
# Per-server attempt timeout; the whole lookup is bounded by the configured timeout.
_ATTEMPT_TIMEOUT = 2.0


# -- errors ----------------------------------------------------------------------------------


class DNSLookupError(MailcaseError):
    """A lookup gave no records. `temporary` tells whether asking later may help."""

    temporary: bool = False

    def __init__(
        self, name: str, rdtype: str, detail: str = "", *, authenticated: bool = False
    ) -> None:
        self.name = name
        self.rdtype = rdtype
        self.detail = detail
        # For NoSuchRecord: the AD bit of the negative answer. DANE needs to tell an
        # authenticated denial of existence from an insecure one (RFC 7672 §2.2).
        self.authenticated = authenticated
        text = f"{name} {rdtype}: {self.__class__.__name__}"
        super().__init__(f"{text} ({detail})" if detail else text)


class NoSuchRecord(DNSLookupError):  # noqa: N818 - named for the DNS answer, as dnspython's NXDOMAIN
    """Permanent: the DNS says there is no such record (asking again will not change that)."""

    temporary = False


class NXDomain(NoSuchRecord):
    """The name does not exist (NXDOMAIN)."""


class NoData(NoSuchRecord):
    """The name exists but has no record of the asked type (NOERROR, empty answer)."""


class InvalidName(NoSuchRecord):
    """The name is not a valid DNS name (empty or over-long label, over 255 octets)."""


class TemporaryDNSError(DNSLookupError):
    """Temporary: no usable answer now; try later."""

    temporary = True


class DNSTimeout(TemporaryDNSError):  # noqa: N818 - named for the DNS outcome, as dnspython's Timeout
    """No answer within the configured timeout."""


class ServerFailure(TemporaryDNSError):  # noqa: N818 - SERVFAIL, the DNS's own name
    """Every server failed (SERVFAIL, REFUSED, an unparsable reply, unreachable)."""


# -- typed records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MXRecord:
    """One MX record. `exchange` has no trailing dot; the root is ``"."``."""

    preference: int
    exchange: str

    @property
    def is_null(self) -> bool:
        """A null MX (RFC 7505 §3: ``0 .``): the domain accepts no mail at all."""
        return self.exchange == "."


@dataclass(frozen=True, slots=True)
class TXTRecord:
    """One TXT record as its character-strings (each at most 255 octets)."""

    strings: tuple[bytes, ...]

    @property
    def value(self) -> bytes:
        """The strings concatenated, as SPF (RFC 7208 §3.3), DKIM (RFC 6376 §3.6.2.2), DMARC
        and MTA-STS read them."""
        return b"".join(self.strings)

    @property
    def text(self) -> str:
        """`value` decoded as UTF-8 (undecodable octets replaced)."""
        return self.value.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class TLSARecord:
    """One TLSA record (RFC 6698 §2.1)."""

    usage: int  # 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE
    selector: int  # 0 full certificate, 1 SubjectPublicKeyInfo
    mtype: int  # 0 exact, 1 SHA-256, 2 SHA-512
    data: bytes


@dataclass(frozen=True, slots=True)
class Answer(Generic[R]):
    """A successful lookup: at least one record.

    `name` is what was asked (lower case, no trailing dot); `canonical_name` is where CNAMEs
    led; `ttl` the smallest TTL along the way. `authenticated` is the AD bit of the reply: the
    configured resolver says it validated the answer with DNSSEC. We cannot check that
    ourselves; see the module docstring. (A `NoSuchRecord` carries the same flag for the
    negative answer.)
    """

    name: str
    canonical_name: str
    records: tuple[R, ...]
    ttl: int
    authenticated: bool


# -- configuration ---------------------------------------------------------------------------


def parse_nameserver(text: str, key: str = "dns.nameservers") -> tuple[str, int]:
    """``"IP"``, ``"IP:PORT"``, ``"[IPv6]:PORT"`` or a bare IPv6 address → (address, port).

    Host names are refused: finding the resolver would itself need a resolver.
    """
    s = text.strip()
    host, port = s, 53
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise ConfigError(key, f"{text!r}: missing ']'")
        host, rest = s[1:end], s[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(key, f"{text!r}: expected ':PORT' after ']'")
            port = _port(rest[1:], text, key)
    elif s.count(":") == 1:
        host, p = s.split(":")
        port = _port(p, text, key)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            key, f"{text!r}: a nameserver must be an IP address (optionally :PORT)"
        ) from None
    return str(address), port


def _port(p: str, text: str, key: str) -> int:
    if not p.isdigit() or not 0 < int(p) < 65536:
        raise ConfigError(key, f"{text!r}: port must be 1..65535")
    return int(p)


def tlsa_name(host: str, port: int = 25, protocol: str = "tcp") -> str:
    """The name of the TLSA records of a service: ``_25._tcp.mx.example.com`` (RFC 6698 §3)."""
    return f"_{port}._{protocol}.{host.rstrip('.')}"


# -- the resolver ----------------------------------------------------------------------------


def _configure(
    r: dns.resolver.BaseResolver, servers: list[tuple[str, int]], timeout: float
) -> None:
    if servers:
        r.nameservers = [dns.nameserver.Do53Nameserver(a, p) for a, p in servers]
    r.lifetime = timeout
    r.timeout = min(_ATTEMPT_TIMEOUT, timeout)
    r.use_edns(0, 0, _EDNS_PAYLOAD)
    # RFC 6840 §5.7: ask for the AD bit without asking for DNSSEC records (DO).
    r.flags = dns.flags.RD | dns.flags.AD
    r.retry_servfail = False  # a SERVFAIL is an answer: report it, let the caller retry later
    r.cache = None  # answers must follow the zone (tests change records; TTLs are short)


class Resolver:
    """DNS lookups through the configured servers, sync (`*_sync`) and async.

    `nameservers` are ``"IP[:PORT]"`` strings (the `dns.nameservers` setting); empty means the
    system's resolver (/etc/resolv.conf). `timeout` bounds each lookup, retries included.
    Bad values raise `ConfigError` at construction, as config errors should.

    The sync methods are for code that already runs in a worker thread (sender authentication
    with dkimpy and pyspf, which are synchronous); the async ones for the event loop.
    """

    def __init__(self, nameservers: Sequence[str] = (), *, timeout: float = 5.0) -> None:
        if isinstance(nameservers, str):
            raise ConfigError("dns.nameservers", "a list of 'IP[:PORT]' strings, not one string")
        if not timeout > 0:
            raise ConfigError("dns.timeout", "must be a positive number of seconds")
        self.timeout = float(timeout)
        self.nameservers: tuple[tuple[str, int], ...] = tuple(
            parse_nameserver(n) for n in nameservers
        )
        servers = list(self.nameservers)
        try:
            self._sync = dns.resolver.Resolver(configure=not servers)
            self._async = dns.asyncresolver.Resolver(configure=not servers)
        except dns.resolver.NoResolverConfiguration as exc:
            raise ConfigError(
                "dns.nameservers", f"empty, and the system has no usable resolver: {exc}"
            ) from None
        _configure(self._sync, servers, self.timeout)
        _configure(self._async, servers, self.timeout)

    def __repr__(self) -> str:
        servers = ", ".join(f"{a}:{p}" for a, p in self.nameservers) or "system"
        return f"<Resolver {servers} timeout={self.timeout}>"

    # -- async -----------------------------------------------------------------------------

    async def a(self, name: str) -> Answer[ipaddress.IPv4Address]:
        """IPv4 addresses of `name`."""
        return _answer(name, "A", await self._query_async(name, "A"), _ipv4)

    async def aaaa(self, name: str) -> Answer[ipaddress.IPv6Address]:
        """IPv6 addresses of `name`."""
        return _answer(name, "AAAA", await self._query_async(name, "AAAA"), _ipv6)

    async def mx(self, name: str) -> Answer[MXRecord]:
        """MX records of `name`, sorted by preference (a null MX is `MXRecord.is_null`)."""
        return _sorted_mx(_answer(name, "MX", await self._query_async(name, "MX"), _mx))

    async def txt(self, name: str) -> Answer[TXTRecord]:
        """TXT records of `name` (SPF, DKIM keys, DMARC, ``_mta-sts``)."""
        return _answer(name, "TXT", await self._query_async(name, "TXT"), _txt)

    async def tlsa(self, name: str) -> Answer[TLSARecord]:
        """TLSA records at `name` (see `tlsa_name`); check `Answer.authenticated` before use."""
        return _answer(name, "TLSA", await self._query_async(name, "TLSA"), _tlsa)

    async def cname(self, name: str) -> Answer[str]:
        """The CNAME target of `name` (other lookups follow CNAMEs by themselves)."""
        return _answer(name, "CNAME", await self._query_async(name, "CNAME"), _target)

    async def ptr(self, address: str) -> Answer[str]:
        """Names of an IP address, or of a reverse name (``…in-addr.arpa``, ``…ip6.arpa``)."""
        name = _reverse(address)
        return _answer(name, "PTR", await self._query_async(name, "PTR"), _target)

    # -- sync ------------------------------------------------------------------------------

    def a_sync(self, name: str) -> Answer[ipaddress.IPv4Address]:
        """IPv4 addresses of `name`."""
        return _answer(name, "A", self._query_sync(name, "A"), _ipv4)

    def aaaa_sync(self, name: str) -> Answer[ipaddress.IPv6Address]:
        """IPv6 addresses of `name`."""
        return _answer(name, "AAAA", self._query_sync(name, "AAAA"), _ipv6)

    def mx_sync(self, name: str) -> Answer[MXRecord]:
        """MX records of `name`, sorted by preference."""
        return _sorted_mx(_answer(name, "MX", self._query_sync(name, "MX"), _mx))

    def txt_sync(self, name: str) -> Answer[TXTRecord]:
        """TXT records of `name`."""
        return _answer(name, "TXT", self._query_sync(name, "TXT"), _txt)

    def tlsa_sync(self, name: str) -> Answer[TLSARecord]:
        """TLSA records at `name`."""
        return _answer(name, "TLSA", self._query_sync(name, "TLSA"), _tlsa)

    def cname_sync(self, name: str) -> Answer[str]:
        """The CNAME target of `name`."""
        return _answer(name, "CNAME", self._query_sync(name, "CNAME"), _target)

    def ptr_sync(self, address: str) -> Answer[str]:
        """Names of an IP address, or of a reverse name."""
        name = _reverse(address)
        return _answer(name, "PTR", self._query_sync(name, "PTR"), _target)

    # -- the one place dnspython is called ------------------------------------------------------

    def _query_sync(self, name: str, rdtype: str) -> dns.resolver.Answer:
        qname = _qname(name, rdtype)
        try:
            return self._sync.resolve(qname, rdtype, search=False)
        except dns.exception.DNSException as exc:
            raise _classify(name, rdtype, exc) from None

    async def _query_async(self, name: str, rdtype: str) -> dns.resolver.Answer:
        qname = _qname(name, rdtype)
        try:
            return await self._async.resolve(qname, rdtype, search=False)
        except dns.exception.DNSException as exc:
            raise _classify(name, rdtype, exc) from None


def _qname(name: str, rdtype: str) -> dns.name.Name:
    try:
        return dns.name.from_text(name.strip().rstrip(".") + ".")
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise InvalidName(_display(name), rdtype, str(exc)) from None


def _display(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _classify(name: str, rdtype: str, exc: dns.exception.DNSException) -> DNSLookupError:
    n = _display(name)
    if isinstance(exc, dns.resolver.NXDOMAIN):
        responses = list(exc.kwargs.get("responses", {}).values())
        return NXDomain(n, rdtype, authenticated=bool(responses) and all(map(_ad, responses)))
    if isinstance(exc, dns.resolver.NoAnswer):
        return NoData(n, rdtype, authenticated=_ad(exc.kwargs.get("response")))
    if isinstance(exc, dns.resolver.YXDOMAIN):  # a DNAME made the name too long
        return InvalidName(n, rdtype, str(exc))
    if isinstance(exc, dns.exception.Timeout):
        return DNSTimeout(n, rdtype, str(exc))
    if isinstance(exc, dns.resolver.NoNameservers):
        return ServerFailure(n, rdtype, str(exc))
    return TemporaryDNSError(n, rdtype, f"{type(exc).__name__}: {exc}")


def _ad(response: object) -> bool:
    return isinstance(response, dns.message.Message) and bool(response.flags & dns.flags.AD)


def _answer(
    name: str, rdtype: str, ans: dns.resolver.Answer, convert: Callable[[Any], R]
) -> Answer[R]:
    rrset = ans.rrset
    if rrset is None or len(rrset) == 0:  # cannot happen with raise_on_no_answer; be safe
        raise NoData(_display(name), rdtype)
    return Answer(
        name=_display(name),
        canonical_name=ans.canonical_name.to_text(omit_final_dot=True).lower(),
        records=tuple(convert(r) for r in rrset),
        ttl=int(ans.chaining_result.minimum_ttl),
        authenticated=bool(ans.response.flags & dns.flags.AD),
    )


def _ipv4(r: Any) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(r.address)


def _ipv6(r: Any) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(r.address)


def _host(n: dns.name.Name) -> str:
    return "." if n == dns.name.root else n.to_text(omit_final_dot=True).lower()


def _mx(r: Any) -> MXRecord:
    return MXRecord(int(r.preference), _host(r.exchange))


def _sorted_mx(a: Answer[MXRecord]) -> Answer[MXRecord]:
    # RFC 5321 §5.1: lower preference first. Equal preferences keep the server's order;
    # randomising among them (as §5.1 asks) is the delivery engine's choice.
    records = tuple(sorted(a.records, key=lambda m: m.preference))
    return Answer(a.name, a.canonical_name, records, a.ttl, a.authenticated)


def _txt(r: Any) -> TXTRecord:
    return TXTRecord(tuple(bytes(s) for s in r.strings))


def _tlsa(r: Any) -> TLSARecord:
    return TLSARecord(int(r.usage), int(r.selector), int(r.mtype), bytes(r.cert))


def _target(r: Any) -> str:
    return _host(r.target)


def _reverse(address: str) -> str:
    # An address, or a reverse name already built (pyspf builds its own for the "ptr"
    # mechanism and the %{p} macro).
    name = _display(address)
    if name.endswith((".in-addr.arpa", ".ip6.arpa")):
        return name
    try:
        return dns.reversename.from_address(address).to_text(omit_final_dot=True)
    except (dns.exception.SyntaxError, ValueError) as exc:
        raise InvalidName(address, "PTR", str(exc)) from None
