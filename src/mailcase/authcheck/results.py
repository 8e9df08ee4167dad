"""The verdicts of sender authentication, and their Authentication-Results header (RFC 8601).

Values, not behaviour: the pipeline stores them on the message and features decide with
`is_authenticated` (issue 3's `require_authenticated_sender`). Every string that came from the
message or the DNS is sanitised before it goes into the header (no CR/LF, quoted where the
grammar asks), so a hostile From or selector cannot add header fields.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "ARCResult",
    "ARCVerdict",
    "AuthResults",
    "DKIMResult",
    "DKIMVerdict",
    "DMARCPolicy",
    "DMARCResult",
    "DMARCVerdict",
    "SPFResult",
    "SPFVerdict",
    "is_authenticated",
]

# RFC 8601 §2.7.2 (SPF, from RFC 7208 §2.6), §2.7.1 (DKIM), RFC 7489 §11.2 (DMARC),
# RFC 8617 §10.1 (ARC).
SPFVerdict = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
DKIMVerdict = Literal["pass", "fail", "policy", "neutral", "none", "temperror", "permerror"]
DMARCVerdict = Literal["pass", "fail", "none", "temperror", "permerror"]
ARCVerdict = Literal["pass", "fail", "none"]
DMARCPolicy = Literal["none", "quarantine", "reject"]


@dataclass(frozen=True, slots=True)
class SPFResult:
    """SPF for one identity: MAIL FROM, or HELO when the reverse-path was null."""

    result: SPFVerdict
    domain: str  # the domain whose policy was evaluated ("" when there was none)
    identity: Literal["mailfrom", "helo"]
    mail_from: str
    helo: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DKIMResult:
    """One DKIM-Signature header field and what became of it."""

    result: DKIMVerdict
    domain: str  # d=
    selector: str  # s=
    algorithm: str = ""  # a=
    identity: str = ""  # i=, when given
    b: str = ""  # the first characters of b=, to tell signatures apart (RFC 6008)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DMARCResult:
    """DMARC for the RFC 5322.From domain (RFC 7489).

    `policy` is the one that applies to `from_domain` (p=, or sp=/np= for a subdomain), also
    when the result is pass; None when no record was found. Applying it (reject, quarantine)
    is the caller's decision. `pct` is reported, not sampled: mailcase never draws lots.
    The alignment flags are computed even without a DMARC record (relaxed mode then), because
    `is_authenticated` accepts an aligned SPF or DKIM pass on its own.
    """

    result: DMARCVerdict
    from_domain: str
    policy: DMARCPolicy | None = None
    record_domain: str | None = None  # where the record was found: From or org domain
    org_domain: str = ""
    spf_aligned: bool = False  # SPF passed for a domain aligned with From
    dkim_aligned: bool = False  # a DKIM signature passed for a domain aligned with From
    adkim: Literal["r", "s"] = "r"
    aspf: Literal["r", "s"] = "r"
    pct: int = 100
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ARCResult:
    """The ARC chain's validation (RFC 8617 §5.2), when the message has one."""

    result: ARCVerdict
    instances: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AuthResults:
    """All verdicts for one message, as checked by `authserv_id`."""

    authserv_id: str
    spf: SPFResult
    dkim: tuple[DKIMResult, ...] = field(default_factory=tuple)
    dmarc: DMARCResult = field(default_factory=lambda: DMARCResult("none", ""))
    arc: ARCResult | None = None

    def header(self, *, fold: bool = True) -> str:
        """The value of an ``Authentication-Results:`` header field (RFC 8601 §2.2).

        Prepend ``"Authentication-Results: "``. With `fold`, each result is on its own
        continuation line (CRLF + TAB), which keeps lines short without splitting a result.
        """
        parts = [_pvalue(self.authserv_id)]
        parts.append(self._spf())
        if self.dkim:
            parts.extend(_dkim(d) for d in self.dkim)
        else:
            parts.append("dkim=none")
        parts.append(self._dmarc())
        if self.arc is not None:
            a = self.arc
            arc = f"arc={a.result}"
            if a.instances:
                arc += f" (i={a.instances})"
            if a.reason and a.result != "pass":
                arc += f" reason={_quoted(a.reason)}"
            parts.append(arc)
        sep = ";\r\n\t" if fold else "; "
        return sep.join(parts)

    def _spf(self) -> str:
        s = self.spf
        text = f"spf={s.result}"
        if s.reason and s.result not in ("pass", "none"):
            text += f" reason={_quoted(s.reason)}"
        if s.identity == "mailfrom" and s.domain:
            # RFC 8601 §2.7.2: the domain; the local-part SHOULD NOT be given.
            text += f" smtp.mailfrom={_pvalue(s.domain)}"
        elif s.helo:
            text += f" smtp.helo={_pvalue(s.helo)}"
        return text

    def _dmarc(self) -> str:
        d = self.dmarc
        text = f"dmarc={d.result}"
        if d.policy is not None:
            text += f" (p={d.policy})"
        if d.reason and d.result not in ("pass",):
            text += f" reason={_quoted(d.reason)}"
        if d.from_domain:
            text += f" header.from={_pvalue(d.from_domain)}"
        return text

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON columns and the API)."""
        data = asdict(self)
        data["dkim"] = [asdict(d) for d in self.dkim]
        data["authenticated"] = is_authenticated(self)
        return data


def _dkim(d: DKIMResult) -> str:
    text = f"dkim={d.result}"
    if d.reason and d.result != "pass":
        text += f" reason={_quoted(d.reason)}"
    if d.domain:
        text += f" header.d={_pvalue(d.domain)}"
    if d.identity:
        text += f" header.i={_pvalue(d.identity)}"
    if d.selector:
        text += f" header.s={_pvalue(d.selector)}"
    if d.algorithm:
        text += f" header.a={_pvalue(d.algorithm)}"
    if d.b:
        text += f" header.b={_pvalue(d.b)}"
    return text


def is_authenticated(results: AuthResults) -> bool:
    """DMARC pass, or an SPF or DKIM pass aligned with the From domain (issue 3's
    `require_authenticated_sender`). Without a DMARC record, alignment is relaxed."""
    d = results.dmarc
    return d.result == "pass" or d.spf_aligned or d.dkim_aligned


# -- RFC 8601 §2.2 grammar helpers ----------------------------------------------------------

# RFC 2045 token: any CHAR but SPACE, CTLs and tspecials ()<>@,;:\"/[]?=
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
# [local-part "@"] domain-name, with a dot-atom local part: may stand bare (RFC 8601 §2.2).
_ATEXT = r"[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z]+"
_MAILBOX = re.compile(rf"(?:{_ATEXT}(?:\.{_ATEXT})*)?@[0-9A-Za-z](?:[0-9A-Za-z.\-]*[0-9A-Za-z])?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _clean(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


def _quoted(text: str, limit: int = 200) -> str:
    t = _clean(text)
    if len(t) > limit:
        t = t[: limit - 3] + "..."
    return '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pvalue(text: str) -> str:
    t = _clean(text)
    if t and (_TOKEN.fullmatch(t) or _MAILBOX.fullmatch(t)):
        return t
    return _quoted(t, limit=500)
