"""Outbound TLS policy as pure functions: which mode applies, and what to do at each step.

The delivery client asks twice per connection: after EHLO (`on_ehlo`: STARTTLS, plaintext or
refuse) and after the handshake (`after_handshake`: proceed or refuse). Keeping the decision
here, with no I/O, is what lets MTA-STS, DANE, REQUIRETLS and anti-downgrade memory slot in
later: they only change the mode (or add inputs) before these functions are asked.

Modes (Salesforce Deliverability names):

- ``off``: never STARTTLS (only for a relay on a trusted link).
- ``preferred`` (default): STARTTLS when offered, certificate not checked; plaintext when not
  offered, and when STARTTLS fails (a failed handshake, a refused command) the same MX is
  tried again at once in plaintext, the fallback logged on the attempt (Postfix level
  ``may``; RFC 7435 §1.2: opportunistic security must not be worse than no security).
  `plaintext_fallback_allowed` is the one place that decides it.
- ``required``: STARTTLS must succeed; certificate not checked.
- ``preferred_verify``: when offered, the certificate must verify (chain and host name); a
  failed check ends the session before any content: there is no silent fallback to plaintext
  once TLS was offered. Plaintext only when the server does not offer STARTTLS.
- ``required_verify``: STARTTLS with a verified certificate, or no delivery.

Per-domain patterns as Salesforce: ``example.com`` matches that domain only; ``*.example.com``
matches its subdomains only (not example.com itself). The most specific pattern wins: an exact
name beats any wildcard, a longer wildcard beats a shorter one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from mailcase.config import OUTBOUND_TLS_MODES, OutboundTLSMode

__all__ = [
    "TLSAction",
    "TLSDecision",
    "after_handshake",
    "decide",
    "domain_matches",
    "mode_for_domain",
    "on_ehlo",
    "plaintext_fallback_allowed",
    "verifies",
]


#: starttls: issue STARTTLS; plaintext: go on without TLS; proceed: go on over the TLS session
#: just made; refuse: end the session (QUIT) before MAIL FROM; fallback: STARTTLS failed,
#: connect to the same server again and go on without TLS.
TLSAction = Literal["starttls", "plaintext", "proceed", "refuse", "fallback"]


@dataclass(frozen=True, slots=True)
class TLSDecision:
    """What to do, and why (the reason goes to the email log when the session is refused)."""

    action: TLSAction
    reason: str = ""


def verifies(mode: str) -> bool:
    """Whether `mode` checks the server certificate (chain and host name)."""
    return mode in ("preferred_verify", "required_verify")


def domain_matches(pattern: str, domain: str) -> bool:
    """`example.com` matches only itself; `*.example.com` only its subdomains; `*` anything."""
    pattern = pattern.strip().lower().rstrip(".")
    domain = domain.strip().lower().rstrip(".")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return domain.endswith(pattern[1:]) and len(domain) > len(pattern) - 1
    return domain == pattern


def _specificity(pattern: str) -> tuple[int, int]:
    # exact names first (1), then wildcards by length
    return (0 if pattern.startswith("*") else 1, len(pattern))


def mode_for_domain(default: str, per_domain: Mapping[str, str], domain: str) -> OutboundTLSMode:
    """The mode for `domain`: the most specific matching pattern, else `default`."""
    matching = [p for p in per_domain if domain_matches(p, domain)]
    if not matching:
        return _mode(default)
    return _mode(per_domain[max(matching, key=_specificity)])


def _mode(value: str) -> OutboundTLSMode:
    for mode in OUTBOUND_TLS_MODES:
        if mode == value:
            return mode
    raise ValueError(f"unknown TLS mode {value!r}: one of {', '.join(OUTBOUND_TLS_MODES)}")


def on_ehlo(mode: str, *, starttls_offered: bool) -> TLSDecision:
    """After EHLO: STARTTLS, plaintext, or refuse (required TLS that is not offered)."""
    m = _mode(mode)
    if m == "off":
        return TLSDecision("plaintext", "TLS off for this destination")
    if starttls_offered:
        return TLSDecision("starttls")
    if m in ("required", "required_verify"):
        return TLSDecision(
            "refuse", f"TLS required ({m}) but the server does not offer STARTTLS"
        )
    return TLSDecision("plaintext", "STARTTLS not offered")


def plaintext_fallback_allowed(mode: str) -> bool:
    """After STARTTLS failed: may the same server be tried again in plaintext?

    Only in ``preferred`` (Postfix ``may``): the sender asked for opportunistic TLS, which
    must not deliver less than plaintext would (RFC 7435 §1.2). Never in ``required`` or the
    verify modes, where the policy is the point. This is the one predicate: a policy that
    forbids downgrades for a domain (MTA-STS, DANE, a remembered TLS peer) applies here.
    """
    return _mode(mode) == "preferred"


def after_handshake(mode: str, *, verified: bool, error: str = "") -> TLSDecision:
    """After a successful or failed handshake: go on over TLS, refuse, or fall back.

    `verified` is whether the chain and host name checked out (only asked in verify modes;
    a failed check there is the handshake failing). `error` describes a failed handshake.
    Never plaintext on the connection where STARTTLS was attempted: a fallback is a new
    connection (`plaintext_fallback_allowed`).
    """
    m = _mode(mode)
    if error and plaintext_fallback_allowed(m):
        return TLSDecision(
            "fallback", f"TLS handshake failed ({m}): {error}; retried in plaintext"
        )
    if error:
        what = "certificate verification failed" if verifies(m) else "TLS handshake failed"
        return TLSDecision("refuse", f"{what} ({m}): {error}")
    if verifies(m) and not verified:
        return TLSDecision("refuse", f"certificate not verified ({m})")
    return TLSDecision("proceed")


def decide(
    default: str,
    per_domain: Mapping[str, str],
    domain: str,
    *,
    starttls_offered: bool,
    verified: bool | None = None,
    error: str = "",
) -> TLSDecision:
    """One call for the whole policy: the domain's mode, then `on_ehlo` (`verified` None: no
    handshake yet) or `after_handshake`."""
    mode = mode_for_domain(default, per_domain, domain)
    if verified is None and not error:
        return on_ehlo(mode, starttls_offered=starttls_offered)
    return after_handshake(mode, verified=bool(verified), error=error)
