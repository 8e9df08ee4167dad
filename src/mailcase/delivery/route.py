"""Routing: which hosts to try for a destination (a recipient domain's MX, or a relay).

MX (RFC 5321 §5.1): MX records by preference (equal preferences shuffled); no MX record but
the domain exists: its own A/AAAA ("implicit MX"); a null MX (RFC 7505 §3, ``0 .``) or a
domain that does not exist: permanent failure; a DNS failure: transient. At most
`MAX_ADDRESSES` addresses are tried (Postfix's smtp_mx_address_limit).

Lookups go through `mailcase.dns.Resolver` built from ``settings.dns``, so tests point it at
their own DNS server. A relay named by host name that mailcase's resolver does not know is
looked up with the system resolver too (relays often live in /etc/hosts).
"""

from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import dataclass

from mailcase.delivery.client import Credentials, Target
from mailcase.delivery.relays import RelayInfo, is_ip
from mailcase.dns import Resolver
from mailcase.dns.resolver import NoData, NoSuchRecord, NXDomain, TemporaryDNSError

__all__ = ["MAX_ADDRESSES", "RouteFailure", "resolve_mx", "resolve_relay"]

MAX_ADDRESSES = 5


@dataclass(frozen=True, slots=True)
class RouteFailure:
    """No host to try: `permanent` (null MX, no such domain) or not (DNS trouble)."""

    permanent: bool
    code: int | None
    text: str


async def _addresses(resolver: Resolver, host: str, *, system_fallback: bool) -> list[str]:
    """A then AAAA addresses of `host`; raises TemporaryDNSError if both failed that way."""
    if is_ip(host):
        return [host]
    out: list[str] = []
    temp: TemporaryDNSError | None = None
    for lookup in (resolver.a, resolver.aaaa):
        try:
            ans = await lookup(host)
            out.extend(str(r) for r in ans.records)
        except NoSuchRecord:
            pass
        except TemporaryDNSError as e:
            temp = e
    if not out and system_fallback:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
            out = list(dict.fromkeys(str(i[4][0]) for i in infos))
        except OSError:
            pass
    if not out and temp is not None:
        raise temp
    return out


async def _mx_hosts(resolver: Resolver, domain: str) -> list[str] | RouteFailure:
    try:
        ans = await resolver.mx(domain)
    except NXDomain:
        return RouteFailure(True, 550, f"5.1.2 domain {domain} does not exist (NXDOMAIN)")
    except NoData:
        return [domain]  # implicit MX: the domain's own addresses (RFC 5321 §5.1)
    except NoSuchRecord as e:
        return RouteFailure(True, 550, f"5.1.2 domain {domain}: {e}")
    except TemporaryDNSError as e:
        return RouteFailure(False, None, f"4.4.3 MX lookup of {domain} failed: {e}")
    records = list(ans.records)
    if any(r.is_null for r in records):
        return RouteFailure(
            True, 556, f"5.1.10 {domain} accepts no mail (null MX, RFC 7505)"
        )
    by_pref: dict[int, list[str]] = {}
    for r in records:
        by_pref.setdefault(r.preference, []).append(r.exchange)
    hosts: list[str] = []
    for pref in sorted(by_pref):
        group = by_pref[pref]
        random.shuffle(group)
        hosts.extend(group)
    return hosts


async def _targets(
    resolver: Resolver, hosts: list[str], domain: str, kw: dict[str, object], *,
    system_fallback: bool = False,
) -> list[Target] | RouteFailure:
    targets: list[Target] = []
    temp = ""
    for host in hosts:
        try:
            ips = await _addresses(resolver, host, system_fallback=system_fallback)
        except TemporaryDNSError as e:
            temp = str(e)
            continue
        for ip in ips:
            targets.append(Target(host=host, ip=ip, **kw))  # type: ignore[arg-type]
            if len(targets) >= MAX_ADDRESSES:
                return targets
    if targets:
        return targets
    if temp:
        return RouteFailure(False, None, f"4.4.3 address lookup for {domain} failed: {temp}")
    return RouteFailure(False, None, f"4.4.4 no address found for the mail hosts of {domain}")


async def resolve_mx(
    resolver: Resolver, domain: str, *, port: int, tls_mode: str
) -> list[Target] | RouteFailure:
    """The hosts to try for `domain`, best first, or why there are none."""
    hosts = await _mx_hosts(resolver, domain)
    if isinstance(hosts, RouteFailure):
        return hosts
    return await _targets(resolver, hosts, domain, {"port": port, "tls_mode": tls_mode})


async def resolve_relay(resolver: Resolver, relay: RelayInfo) -> list[Target] | RouteFailure:
    """The hosts to try for a relay (its host, or the MX hosts of its domain)."""
    if relay.problem is not None:
        # RFC 3463 X.3.5: system incorrectly configured. Deferred, never bounced.
        return RouteFailure(False, None, f"4.3.5 {relay.problem}")
    cred = None
    if relay.auth_mechanism and relay.username is not None and relay.password is not None:
        cred = Credentials(relay.auth_mechanism, relay.username, relay.password)  # type: ignore[arg-type]
    kw: dict[str, object] = {
        "port": relay.port, "tls_mode": relay.tls_mode, "implicit_tls": relay.port == 465,
        "relay": relay.name, "credentials": cred,
    }
    if relay.host_kind == "mx":
        hosts = await _mx_hosts(resolver, relay.host)
        if isinstance(hosts, RouteFailure):
            # A relay that cannot be found is a configuration problem: defer, never bounce.
            return RouteFailure(False, None, f"4.4.3 relay {relay.name}: {hosts.text[6:]}")
        return await _targets(resolver, hosts, relay.host, kw)
    return await _targets(resolver, [relay.host], relay.host, kw, system_fallback=True)
