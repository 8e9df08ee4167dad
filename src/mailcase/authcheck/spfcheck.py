"""SPF (RFC 7208) with pyspf, its DNS lookups going through mailcase's resolver.

pyspf has no parameter for a DNS function: `spf.query.dns()` calls the module-level
`spf.DNSLookup(name, qtype, strict, timeout)`, which is bound at import to its dnspython driver
(and so to the system resolver). We replace that module attribute, once, with a dispatcher
that looks at a context variable: inside `check_spf` it holds our `Resolver` and the lookup goes
through it; anywhere else (another library in the same process using pyspf) the variable is
unset and the dispatcher calls pyspf's original function, so nothing else changes. (That
original also calls dnspython's deprecated `dns.resolver.query`, a DeprecationWarning on every
lookup: one more reason not to go through it.) A context
variable, not a global, because checks run concurrently in threads (each thread, and each
`asyncio.to_thread` call, has its own context).

Evaluation itself (mechanisms, macros, include/redirect, the 10-lookup and 2-void-lookup limits
of RFC 7208 §4.6.4) stays pyspf's.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any, Literal, cast

import spf  # type: ignore[import-untyped]

from mailcase.authcheck.orgdomain import normalize_domain
from mailcase.authcheck.results import SPFResult, SPFVerdict
from mailcase.dns import NoSuchRecord, Resolver, TemporaryDNSError

__all__ = ["check_spf"]

_VERDICTS: frozenset[str] = frozenset(
    ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
)
# RFC 7208 §4.6.4: at least 20 s for the whole evaluation is recommended; bound it by the
# resolver's own timeout per lookup, and the total here.
_TOTAL_TIME = 20.0

_resolver: contextvars.ContextVar[Resolver | None] = contextvars.ContextVar(
    "mailcase_spf_resolver", default=None
)
_install_lock = threading.Lock()


def _lookup(resolver: Resolver, name: str, qtype: str) -> list[tuple[tuple[str, str], Any]]:
    """pyspf's DNSLookup contract: [((name, qtype), value)], [] for no data, TempError else.

    Values as pyspf's dnspython driver gives them: A/AAAA address text, MX (preference, host),
    PTR host, TXT list of byte strings. CNAMEs are followed by the resolver.
    """
    key = (name, qtype)
    try:
        if qtype == "A":
            return [(key, str(a)) for a in resolver.a_sync(name).records]
        if qtype == "AAAA":
            return [(key, str(a)) for a in resolver.aaaa_sync(name).records]
        if qtype == "MX":
            return [(key, (m.preference, m.exchange)) for m in resolver.mx_sync(name).records]
        if qtype == "PTR":
            # pyspf hands us the reverse name itself (…in-addr.arpa), which ptr_sync takes.
            return [(key, t) for t in resolver.ptr_sync(name).records]
        if qtype in ("TXT", "SPF"):
            return [(key, list(t.strings)) for t in resolver.txt_sync(name).records]
    except NoSuchRecord:
        return []
    except TemporaryDNSError as exc:
        raise spf.TempError(f"DNS {exc}") from None
    return []  # a type pyspf never asks for (SPF RR type 99 is only asked in "harsh" mode)


# pyspf's own lookup function, called when no mailcase resolver is in context.
_original: Callable[..., Any] | None = None


def _dispatch(name: str, qtype: str, strict: Any = True, timeout: Any = 20) -> Any:
    resolver = _resolver.get()
    if resolver is None:
        assert _original is not None  # set by _install before this is reachable
        return _original(name, qtype, strict, timeout)
    return _lookup(resolver, name, qtype)


def _install() -> None:
    """Put the dispatcher in place of `spf.DNSLookup`, once."""
    global _original  # noqa: PLW0603 - pyspf's own lookup, kept for checks without our resolver
    with _install_lock:
        if spf.DNSLookup is _dispatch:
            return
        _original = spf.DNSLookup
        spf.DNSLookup = _dispatch


def check_spf(*, client_ip: str, helo: str, mail_from: str, resolver: Resolver) -> SPFResult:
    """Evaluate SPF for the MAIL FROM identity, or for HELO when the reverse-path is null.

    RFC 7208 §2.4: with a null reverse-path (bounces), the checked identity is
    ``postmaster@<HELO>``; pyspf does that when `mail_from` is empty.
    """
    _install()
    mail_from = mail_from.strip().strip("<>")
    helo = helo.strip()
    identity: Literal["mailfrom", "helo"] = "mailfrom" if mail_from else "helo"
    # pyspf's split_email: a reverse-path without "@" is taken as a bare domain.
    domain = normalize_domain(mail_from.rpartition("@")[2] if mail_from else helo)
    if not domain:
        return SPFResult("none", "", identity, mail_from, helo, "no domain to check")
    token = _resolver.set(resolver)
    try:
        q = spf.query(i=client_ip, s=mail_from, h=helo, querytime=_TOTAL_TIME)
        result, _code, explanation = q.check()
    except (ValueError, spf.PermError) as exc:  # e.g. an unparsable client IP
        return SPFResult("permerror", domain, identity, mail_from, helo, str(exc))
    finally:
        _resolver.reset(token)
    verdict = str(result).lower()
    if verdict not in _VERDICTS:  # pyspf's "ambiguous" exists only in harsh mode
        verdict = "permerror"
    return SPFResult(cast(SPFVerdict, verdict), domain, identity, mail_from, helo, explanation)
