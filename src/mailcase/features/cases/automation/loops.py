"""Pure part of loop detection: what makes two messages "the same" for the loop window.

Two messages are the same when sender, subject and body are: the subject without reply
prefixes ("Re:", "AW:", "Fwd:" …), thread tokens and case of letters, the body with its
whitespace collapsed. A responder that answers itself with "Re: Re: Re: …" or re-wraps the
text is then still recognised.
"""

from __future__ import annotations

import hashlib
import re

from mailcase.features.cases.threadtoken import TOKEN_PATTERN

__all__ = ["fingerprint", "normalize_subject"]

_PREFIX = re.compile(
    r"^\s*((re|aw|sv|vs|wg|fw|fwd|tr|rif|r|antw|odp|ynt|auto|autoreply)\s*(\[\d+\])?\s*:\s*)+",
    re.IGNORECASE,
)
_TAG = re.compile(r"\[\s*\]")


def normalize_subject(subject: str) -> str:
    """Subject without reply prefixes, thread tokens and surplus whitespace, case-folded."""
    s = TOKEN_PATTERN.sub("", subject)
    s = _TAG.sub("", s)
    s = " ".join(s.split())
    previous = None
    while previous != s:
        previous = s
        s = _PREFIX.sub("", s).strip()
    return s.casefold()


def fingerprint(sender: str, subject: str, body: str) -> str:
    """SHA-256 hex of sender, normalised subject and whitespace-collapsed body."""
    body_norm = " ".join(TOKEN_PATTERN.sub("", body).split())
    h = hashlib.sha256()
    for part in (sender.strip().casefold(), normalize_subject(subject), body_norm):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()
