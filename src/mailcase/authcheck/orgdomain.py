"""Organizational domains (RFC 7489 §3.2) from the Public Suffix List shipped with authheaders.

Why not authheaders' own `get_org_domain`: it parses the whole list again on every call (about
a quarter of a second), and it goes through publicsuffix2's `get_sld`, which treats a domain
whose top-level label is not on the list (``.test``, ``.internal``, a TLD newer than the list)
as having that single label as its organizational domain: ``a.test`` and ``b.test`` would then
be "aligned". The PSL algorithm's default rule ``*`` says the opposite (the unknown TLD is the
public suffix, the organizational domain is one label more), and so do we.

The list is the file authheaders ships (updated with each authheaders release); it is read
once, lazily, and never fetched from the network.
"""

from __future__ import annotations

import importlib.resources
import threading

from publicsuffix2 import PublicSuffixList  # type: ignore[import-untyped]

__all__ = ["normalize_domain", "org_domain"]

_lock = threading.Lock()
_psl: PublicSuffixList | None = None


def _list() -> PublicSuffixList:
    global _psl  # noqa: PLW0603 - the public suffix list, read once on first use
    with _lock:
        if _psl is None:
            ref = importlib.resources.files("authheaders") / "public_suffix_list.txt"
            with ref.open(encoding="utf-8") as f:
                _psl = PublicSuffixList(f.readlines(), idna=True)
        return _psl


def normalize_domain(domain: str) -> str:
    """Lower case, no trailing dot, IDNA (A-labels) so that U-labels compare with A-labels."""
    d = domain.strip().rstrip(".").lower()
    if not d.isascii():
        try:
            d = d.encode("idna").decode("ascii")
        except UnicodeError:
            pass  # not a valid IDN: compare as given; it cannot match a DNS name anyway
    return d


def org_domain(domain: str) -> str:
    """The organizational domain: the public suffix plus one label (RFC 7489 §3.2).

    ``mail.example.co.uk`` → ``example.co.uk``; ``a.b.example.test`` → ``example.test``;
    a public suffix itself (``co.uk``) is its own organizational domain.
    """
    d = normalize_domain(domain)
    if not d:
        return d
    # wildcard=True applies the default "*" rule; strict=False accepts TLDs not on the list.
    suffix: str | None = _list().get_tld(d, wildcard=True, strict=False)
    labels = d.split(".")
    n = len(suffix.split(".")) if suffix else 1
    if len(labels) <= n:
        return d
    return ".".join(labels[-(n + 1) :])
