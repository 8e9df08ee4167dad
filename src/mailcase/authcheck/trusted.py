"""Verdicts of fetched mail (issue 19), from the message's own headers.

A message taken from a mailbox (IMAP) reached us from the mailbox server, not from its
sender: SPF of that connection says nothing about the sender, so it is never evaluated. What
does say something is what the mailbox server found when the message arrived there:

- the **Authentication-Results** field (RFC 8601) it added, when the admin marked its
  authserv-id trusted for that source. Only the topmost such field counts: a server adds its
  field above every field the message arrived with, so a field below it claiming the same
  authserv-id came from the sender (RFC 8601 §5 says the server must remove those; not all
  do) and fields of other authserv-ids are not the admin's server. Servers that split their
  verdicts over several fields of one authserv-id (one per milter) must combine them;
  rspamd, OpenDMARC with `AuthservID` and Dovecot's Pigeonhole setups add one.
- **ARC** (RFC 8617), when present and there is no such field: the newest ARC set's
  ARC-Authentication-Results counts when dkimpy validates the whole chain, its authserv-id is
  trusted, and its ARC-Seal is signed by that authserv-id's domain or a parent of it (d=), so
  a sender cannot seal a set of its own under a trusted name (mx.microsoft.com sealed by
  microsoft.com, mx.google.com by google.com).

DKIM signatures are verified here too (content, not connection: as valid for fetched mail as
for SMTP mail), and DMARC is evaluated from the trusted SPF verdict and every DKIM pass, so
`is_authenticated` means for fetched mail what it means for SMTP mail.

Why authres parses the fields: it is the RFC 8601 parser dkimpy's own ARC signing uses (the
grammar has comments, quoted strings and versions, which a regular expression gets wrong).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import authres  # type: ignore[import-untyped]
import dkim  # type: ignore[import-untyped]

from mailcase.authcheck.dkimcheck import MAX_SIGNATURES, KeyFetcher, check_arc, check_dkim
from mailcase.authcheck.dmarc import check_dmarc, header_block
from mailcase.authcheck.results import (
    ARCResult,
    AuthResults,
    DKIMResult,
    DKIMVerdict,
    SPFResult,
    SPFVerdict,
)
from mailcase.dns import Resolver

__all__ = ["MAX_RESULTS_FIELDS", "TrustedVerdicts", "authenticate_fetched", "trusted_verdicts"]

#: Authentication-Results fields looked at, from the top: hostile mail may carry thousands.
MAX_RESULTS_FIELDS = 100
_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.ASCII)
_COMMENT = re.compile(r"\([^()]*\)")
_INSTANCE = re.compile(r"^\s*i\s*=\s*(\d{1,3})\s*;", re.ASCII)
_SPF: tuple[SPFVerdict, ...] = ("pass", "fail", "softfail", "neutral", "none", "temperror",
                                "permerror")
_DKIM: tuple[DKIMVerdict, ...] = ("pass", "fail", "policy", "neutral", "none", "temperror",
                                  "permerror")


@dataclass(frozen=True, slots=True)
class TrustedVerdicts:
    """What the trusted mailbox server reported, and where it was read."""

    authserv_id: str
    via: str  # "authentication-results" or "arc"
    spf: SPFResult | None
    dkim: tuple[DKIMResult, ...]
    dmarc_pass_for: str | None  # header.from of a dmarc=pass, else None


def _fields(raw: bytes) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value) of each header field, top first."""
    out: list[tuple[str, str]] = []
    current: list[bytes] = []
    name = b""

    def flush() -> None:
        if current:
            value = b"".join(current).replace(b"\r\n", b"").replace(b"\n", b"")
            out.append((name.decode("ascii").lower(), value.decode("utf-8", "replace")))

    for line in header_block(raw).splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if current:
                current.append(line)
            continue
        flush()
        current = []
        m = _FIELD_NAME.match(line)
        if m is None:
            continue
        name = m.group(1)
        current = [line[m.end():]]
    flush()
    return out


def _authserv_id(value: str) -> str:
    """The authserv-id a field's value starts with (RFC 8601 §2.2), lower-case."""
    head = _COMMENT.sub(" ", value).split(";", 1)[0].split()
    return head[0].strip('"').lower() if head else ""


def _domain(value: str) -> str:
    return value.rpartition("@")[2].strip().strip(".").lower()


def _verdicts(authserv: str, via: str, value: str) -> TrustedVerdicts | None:
    """The verdicts of one field's value (without the ARC `i=`), None if unparsable."""
    parsed = None
    for text in (value, _COMMENT.sub(" ", value)):  # authres stumbles on some comments
        try:
            parsed = authres.AuthenticationResultsHeader.parse_value(text)
            break
        except Exception:  # noqa: BLE001, S112 - authres raises its own SyntaxError and worse
            continue  # hostile input: the next form, else no verdicts
    if parsed is None:
        return None
    reported = f"reported by {authserv}"
    spf: SPFResult | None = None
    dkims: list[DKIMResult] = []
    dmarc_for: str | None = None
    for r in parsed.results:
        method = str(r.method or "").lower()
        result = str(r.result or "").lower()
        props = {(str(p.type).lower(), str(p.name).lower()): str(p.value or "")
                 for p in r.properties}
        if method == "spf" and spf is None:
            verdict = "fail" if result == "hardfail" else result  # RFC 8601 §2.7.2 legacy
            mail_from = props.get(("smtp", "mailfrom"), "")
            helo = props.get(("smtp", "helo"), "")
            spf = SPFResult(
                result=verdict if verdict in _SPF else "neutral",
                domain=_domain(mail_from or helo),
                identity="mailfrom" if mail_from or not helo else "helo",
                mail_from=mail_from, helo=helo, reason=reported)
        elif method == "dkim" and len(dkims) < MAX_SIGNATURES:
            d = props.get(("header", "d"), "") or _domain(props.get(("header", "i"), ""))
            dkims.append(DKIMResult(
                result=result if result in _DKIM else "neutral",
                domain=d.lower(), selector=props.get(("header", "s"), ""),
                algorithm=props.get(("header", "a"), ""),
                identity=props.get(("header", "i"), ""), b=props.get(("header", "b"), "")[:12],
                reason=reported))
        elif method == "dmarc" and result == "pass" and dmarc_for is None:
            dmarc_for = _domain(props.get(("header", "from"), "")) or None
    return TrustedVerdicts(authserv, via, spf, tuple(dkims), dmarc_for)


def _from_results_fields(fields: list[tuple[str, str]],
                         trusted: set[str]) -> TrustedVerdicts | None:
    seen = 0
    for name, value in fields:
        if name != "authentication-results":
            continue
        seen += 1
        if seen > MAX_RESULTS_FIELDS:
            return None
        authserv = _authserv_id(value)
        if authserv in trusted:
            # The topmost field of a trusted server; everything below it is ignored.
            return _verdicts(authserv, "authentication-results", value)
    return None


def _tags(value: str) -> dict[bytes, bytes]:
    try:
        tags: dict[bytes, bytes] = dkim.util.parse_tag_value(value.encode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 - an unparsable seal seals nothing
        return {}
    return tags


def _from_arc(fields: list[tuple[str, str]], trusted: set[str],
              arc: ARCResult | None) -> TrustedVerdicts | None:
    """The newest ARC set's results, when the chain passed and a trusted server sealed it."""
    if arc is None or arc.result != "pass":
        return None
    results: dict[int, str] = {}
    seals: dict[int, str] = {}
    for name, value in fields:
        if name not in ("arc-authentication-results", "arc-seal"):
            continue
        if name == "arc-seal":
            tags = _tags(value)
            instance = bytes(tags.get(b"i", b"")).strip()
            if instance.isdigit() and len(instance) <= 3:
                seals.setdefault(int(instance), bytes(tags.get(b"d", b"")).decode(
                    "ascii", "replace").strip().lower())
        else:
            m = _INSTANCE.match(value)
            if m is not None:
                results.setdefault(int(m.group(1)), value[m.end():])
    if not results:
        return None
    newest = max(results)
    aar = results[newest]
    authserv = _authserv_id(aar)
    sealer = seals.get(newest, "")
    if authserv not in trusted or not sealer:
        return None
    if authserv != sealer and not authserv.endswith("." + sealer):
        return None  # sealed under another name than the server's: not the server's word
    return _verdicts(authserv, "arc", aar)


def trusted_verdicts(raw: bytes, trusted: Sequence[str],
                     arc: ARCResult | None) -> TrustedVerdicts | None:
    """The trusted mailbox server's verdicts (see the module docstring), or None."""
    ids = {t.strip().lower() for t in trusted if t.strip()}
    if not ids:
        return None
    fields = _fields(raw)
    return _from_results_fields(fields, ids) or _from_arc(fields, ids, arc)


def authenticate_fetched(
    raw_message: bytes,
    *,
    trusted: Sequence[str],
    resolver: Resolver,
    authserv_id: str,
) -> AuthResults:
    """The verdicts of a message taken from a mailbox: SPF as the trusted server reported it
    (never of the IMAP connection), DKIM as it reported and as verified here, ARC, and DMARC
    from those (see the module docstring). `authserv_id` names this server in the result."""
    fetcher = KeyFetcher(resolver)
    arc = check_arc(raw_message, fetcher)
    found = trusted_verdicts(raw_message, trusted, arc)
    if found is not None and found.spf is not None:
        spf = found.spf
    else:
        why = (f"{found.authserv_id} reported no SPF" if found is not None else
               "fetched mail without Authentication-Results of a trusted mailbox server "
               "(the SPF of the IMAP connection says nothing)")
        spf = SPFResult("none", "", "mailfrom", "", "", reason=why)
    own = check_dkim(raw_message, fetcher)
    dkims = own + (found.dkim if found is not None else ())
    dmarc = check_dmarc(raw_message, spf, dkims, resolver)
    if (found is not None and found.dmarc_pass_for is not None
            and found.dmarc_pass_for == dmarc.from_domain and dmarc.result != "pass"):
        dmarc = replace(dmarc, result="pass", reason=f"reported by {found.authserv_id}")
    return AuthResults(authserv_id=authserv_id, spf=spf, dkim=dkims, dmarc=dmarc, arc=arc)
