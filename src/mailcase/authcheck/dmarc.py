"""DMARC (RFC 7489, with RFC 9091's np=) evaluated from our SPF and DKIM verdicts.

Why our own and not authheaders' `check_dmarc`: authheaders cannot report a DNS failure as
`temperror` (its lookup function raises on timeouts), with a custom DNS function it keeps only
one TXT record (so "several DMARC records → no policy", RFC 7489 §6.6.3, is lost), and its
organizational domain is wrong for TLDs missing from the suffix list (see `orgdomain`). The
rules themselves are short and are written out below with their sections.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Literal, cast

from mailcase.authcheck.orgdomain import normalize_domain, org_domain
from mailcase.authcheck.results import DKIMResult, DMARCPolicy, DMARCResult, SPFResult
from mailcase.dns import NoSuchRecord, NXDomain, Resolver, TemporaryDNSError

__all__ = ["check_dmarc", "from_domains"]

_POLICIES = ("none", "quarantine", "reject")
_SEVERITY = {"reject": 3, "quarantine": 2, "none": 1, None: 0}


class _FromError(Exception):
    pass


def header_block(message: bytes) -> bytes:
    """The header section of a message (up to the first empty line), without the body."""
    ends = [i for i in (message.find(b"\r\n\r\n"), message.find(b"\n\n")) if i >= 0]
    return message[: min(ends) + 2] if ends else message


def from_domains(message: bytes) -> list[str]:
    """The RFC5322.From domains (RFC 7489 §6.6.1), or `_FromError` when there is not
    exactly one From field or an address in it has no domain."""
    head = BytesHeaderParser(policy=compat32).parsebytes(header_block(message))
    fields = head.get_all("From") or []
    if len(fields) != 1:
        raise _FromError(f"{len(fields)} From header fields; exactly one is required")
    addresses = getaddresses([str(fields[0])])
    domains: list[str] = []
    for _name, addr in addresses:
        local, at, domain = addr.rpartition("@")
        d = normalize_domain(domain)
        if not at or not local or not d:
            raise _FromError(f"no domain in From address {addr!r}")
        if d not in domains:
            domains.append(d)
    if not domains:
        raise _FromError("no address in From")
    return domains


@dataclass(slots=True)
class _Record:
    domain: str  # where it was found
    tags: dict[str, str]


def _parse(text: str) -> dict[str, str] | None:
    """Tag=value pairs (RFC 7489 §6.4) when `v=DMARC1` is the first tag, else None."""
    tags: dict[str, str] = {}
    for i, part in enumerate(p for p in text.split(";") if p.strip()):
        tag, eq, value = part.partition("=")
        tag = tag.strip().lower()
        value = value.strip()
        if i == 0 and (tag != "v" or not eq or value != "DMARC1"):
            return None
        if eq and tag not in tags:
            tags[tag] = value
    return tags or None


def _lookup(domain: str, resolver: Resolver) -> list[dict[str, str]]:
    """The DMARC records at ``_dmarc.<domain>``; raises TemporaryDNSError."""
    try:
        answer = resolver.txt_sync(f"_dmarc.{domain}")
    except NoSuchRecord:
        return []
    found = [_parse(r.text) for r in answer.records]
    return [t for t in found if t is not None]


def _discover(from_domain: str, org: str, resolver: Resolver) -> tuple[_Record | None, str]:
    """Policy discovery, RFC 7489 §6.6.3: the From domain, then its organizational domain."""
    for domain in dict.fromkeys((from_domain, org)):
        records = _lookup(domain, resolver)
        if len(records) > 1:
            # Step 5: several records are treated as none at all.
            return None, f"{len(records)} DMARC records at _dmarc.{domain}"
        if records:
            return _Record(domain, records[0]), ""
    return None, "no DMARC record"


def _policy_value(value: str | None) -> DMARCPolicy | None:
    v = (value or "").strip().lower()
    return cast(DMARCPolicy, v) if v in _POLICIES else None


def _aligned(a: str, b: str, mode: str) -> bool:
    a, b = normalize_domain(a), normalize_domain(b)
    if not a or not b:
        return False
    if mode == "s":  # RFC 7489 §3.1.1/§3.1.2: strict: identical
        return a == b
    return org_domain(a) == org_domain(b)  # relaxed: same organizational domain


def _nonexistent(domain: str, resolver: Resolver) -> bool:
    # RFC 9091 §2.1: a domain is non-existent when the DNS says NXDOMAIN for it.
    try:
        resolver.a_sync(domain)
    except NXDomain:
        return True
    except (NoSuchRecord, TemporaryDNSError):
        return False
    return False


def _evaluate(
    from_domain: str, spf: SPFResult, dkim: tuple[DKIMResult, ...], resolver: Resolver
) -> DMARCResult:
    org = org_domain(from_domain)

    def alignment(aspf: str, adkim: str) -> tuple[bool, bool]:
        spf_ok = spf.result == "pass" and _aligned(spf.domain, from_domain, aspf)
        dkim_ok = any(d.result == "pass" and _aligned(d.domain, from_domain, adkim) for d in dkim)
        return spf_ok, dkim_ok

    try:
        record, why = _discover(from_domain, org, resolver)
    except TemporaryDNSError as exc:
        s, d = alignment("r", "r")
        return DMARCResult(
            "temperror",
            from_domain,
            org_domain=org,
            spf_aligned=s,
            dkim_aligned=d,
            reason=f"DMARC record lookup failed: {exc}",
        )
    if record is None:
        s, d = alignment("r", "r")
        return DMARCResult(
            "none", from_domain, org_domain=org, spf_aligned=s, dkim_aligned=d, reason=why
        )

    tags = record.tags
    p = _policy_value(tags.get("p"))
    sp = _policy_value(tags.get("sp")) if "sp" in tags else p
    if p is None or sp is None:
        # §6.6.3 step 6: no valid p= (or an invalid sp=): with a reporting address, act as
        # if p=none; without one, apply no DMARC processing.
        if "rua" not in tags:
            s, d = alignment("r", "r")
            return DMARCResult(
                "none",
                from_domain,
                org_domain=org,
                spf_aligned=s,
                dkim_aligned=d,
                record_domain=record.domain,
                reason="DMARC record without a valid p=",
            )
        p = sp = "none"
    policy: DMARCPolicy = p
    if record.domain != from_domain:  # found at the organizational domain: a subdomain
        policy = sp
        np = _policy_value(tags.get("np"))
        if np is not None and _nonexistent(from_domain, resolver):
            policy = np
    adkim: Literal["r", "s"] = "s" if tags.get("adkim", "r").lower() == "s" else "r"
    aspf: Literal["r", "s"] = "s" if tags.get("aspf", "r").lower() == "s" else "r"
    try:
        pct = min(100, max(0, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    spf_ok, dkim_ok = alignment(aspf, adkim)
    passed = spf_ok or dkim_ok
    return DMARCResult(
        result="pass" if passed else "fail",
        from_domain=from_domain,
        policy=policy,
        record_domain=record.domain,
        org_domain=org,
        spf_aligned=spf_ok,
        dkim_aligned=dkim_ok,
        adkim=adkim,
        aspf=aspf,
        pct=pct,
        reason="" if passed else "no aligned SPF or DKIM pass",
    )


def check_dmarc(
    message: bytes, spf: SPFResult, dkim: tuple[DKIMResult, ...], resolver: Resolver
) -> DMARCResult:
    """DMARC for the message's From domain(s).

    Several addresses with different domains in From (RFC 7489 §6.6.1): each is evaluated and
    the worst result is reported (a failure under the strictest policy first).
    """
    try:
        domains = from_domains(message)
    except _FromError as exc:
        return DMARCResult("permerror", "", reason=str(exc))
    results = [_evaluate(d, spf, dkim, resolver) for d in domains]
    failures = [r for r in results if r.result == "fail"]
    if failures:
        return max(failures, key=lambda r: _SEVERITY[r.policy])
    for verdict in ("temperror", "none"):
        for r in results:
            if r.result == verdict:
                return r
    return results[0]
