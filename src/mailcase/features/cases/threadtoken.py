"""Thread tokens: the case reference that outbound case mail carries, signed so it cannot be forged.

A token looks like ``thread::b3.k5yq3a2cxwzbjr7d4j6ezp2a::``: the case id in lower-case base32
(RFC 4648 alphabet, no padding), a dot, and the first 120 bits of HMAC-SHA256(server secret,
"mailcase-thread-v1:" + case id), also base32. Guessing one is hopeless (2**120 tries) and
changing the id breaks the signature: `find_case_ids` reports such tokens apart, for the log,
and never returns their id. Comparison is constant-time (`hmac.compare_digest`).

Subject tags (``RE:``, ``AW:``, ``[External]``) and changed subjects do not matter: the token is
found anywhere in the text, in either case (some clients upper-case subjects).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

__all__ = [
    "TOKEN_PATTERN",
    "find_case_ids",
    "make_token",
    "strip_tokens",
    "with_token_in_body",
    "with_token_in_subject",
]

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_SIG_BYTES = 15  # 120 bits: 24 base32 characters, no padding
_SIG_CHARS = 24
_DOMAIN = b"mailcase-thread-v1:"

#: Any text shaped like a token; the signature is checked separately.
TOKEN_PATTERN = re.compile(
    rf"thread::([a-z2-7]{{1,13}})\.([a-z2-7]{{{_SIG_CHARS}}})::", re.IGNORECASE
)
_SUBJECT_TAG = re.compile(
    rf"\s*\[\s*thread::[a-z2-7]{{1,13}}\.[a-z2-7]{{{_SIG_CHARS}}}::\s*\]", re.IGNORECASE
)


def _b32_int(n: int) -> str:
    if n < 0:
        raise ValueError("case id must not be negative")
    digits = []
    while True:
        n, r = divmod(n, 32)
        digits.append(_ALPHABET[r])
        if n == 0:
            return "".join(reversed(digits))


def _int_b32(text: str) -> int:
    n = 0
    for ch in text.lower():
        n = n * 32 + _ALPHABET.index(ch)
    return n


def _signature(secret: bytes, case_id: int) -> str:
    mac = hmac.new(secret, _DOMAIN + str(case_id).encode(), hashlib.sha256).digest()
    return base64.b32encode(mac[:_SIG_BYTES]).decode().lower()


def make_token(secret: bytes, case_id: int) -> str:
    """The token for `case_id`, signed with `secret`."""
    if not secret:
        raise ValueError("an empty secret cannot sign tokens")
    return f"thread::{_b32_int(case_id)}.{_signature(secret, case_id)}::"


def find_case_ids(secret: bytes, text: str) -> tuple[list[int], list[str]]:
    """The case ids of the valid tokens in `text` (first seen first, no repeats) and the
    tokens whose signature failed (for the log; their ids must not be used)."""
    valid: list[int] = []
    refused: list[str] = []
    for m in TOKEN_PATTERN.finditer(text):
        encoded, sig = m.group(1), m.group(2).lower()
        case_id = _int_b32(encoded)
        expected = _signature(secret, case_id)
        canonical = _b32_int(case_id) == encoded.lower()  # no leading "a" (zero) padding
        if hmac.compare_digest(sig, expected) and canonical:
            if case_id not in valid:
                valid.append(case_id)
        elif m.group(0) not in refused:
            refused.append(m.group(0))
    return valid, refused


def strip_tokens(subject: str) -> str:
    """`subject` without ``[ thread::…:: ]`` tags (for showing and for new cases)."""
    return _SUBJECT_TAG.sub("", subject).strip()


def with_token_in_subject(subject: str, token: str) -> str:
    """``Subject [ thread::…:: ]``: other tokens are replaced; already there, unchanged."""
    if token.lower() in subject.lower():
        return subject
    base = strip_tokens(subject)
    return f"{base} [ {token} ]" if base else f"[ {token} ]"


def with_token_in_body(text: str, token: str) -> str:
    """`text` with the token on a line of its own at the end (once)."""
    if token.lower() in text.lower():
        return text
    body = text.rstrip("\r\n")
    return f"{body}\n\n[ {token} ]\n" if body else f"[ {token} ]\n"
