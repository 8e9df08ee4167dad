"""Pure routing decisions: which recipients are routing addresses, who may open cases there.

"Accept email from" (Salesforce's field) lists addresses and domains; empty means anyone.
`user@example.com` matches that mailbox, `example.com` (or `@example.com`) matches the domain
itself and `*.example.com` any subdomain of it. Comparisons ignore case.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

__all__ = ["normalize_accept_entry", "routing_targets", "sender_accepted"]

T = TypeVar("T")


def normalize_accept_entry(entry: str) -> str:
    """Lower-cased, trimmed entry; ValueError when it is neither an address nor a domain."""
    value = entry.strip().lower()
    if value.startswith("@"):
        value = value[1:]
    if not value or any(c.isspace() for c in value) or value.count("@") > 1:
        raise ValueError(f"not an address or domain: {entry!r}")
    local, at, domain = value.rpartition("@")
    check = domain if at else value.removeprefix("*.")
    if (at and not local) or not check or "." not in check and check != "localhost":
        raise ValueError(f"not an address or domain: {entry!r}")
    if "*" in (domain if at else value.removeprefix("*.")) or (at and "*" in local):
        raise ValueError(f"wildcards are only allowed as '*.domain': {entry!r}")
    return value


def sender_accepted(accept_from: Sequence[str], sender: str) -> bool:
    """True when `sender` (an address) may open cases: empty list, or an entry matches."""
    if not accept_from:
        return True
    address = sender.strip().lower()
    _, at, domain = address.rpartition("@")
    if not at or not domain:
        return False
    for raw in accept_from:
        entry = raw.strip().lower().removeprefix("@")
        if "@" in entry:
            if entry == address:
                return True
        elif entry.startswith("*."):
            if domain.endswith(entry[1:]):
                return True
        elif entry == domain:
            return True
    return False


def routing_targets(rcpt_to: Iterable[str], routing: Mapping[str, T]) -> list[T]:
    """The routing entries of the envelope recipients, in recipient order, each once.

    The message is handled once, through the first of them (several aliases of one message
    make one case).
    """
    seen: set[str] = set()
    out: list[T] = []
    for rcpt in rcpt_to:
        key = rcpt.strip().lower()
        if key in routing and key not in seen:
            seen.add(key)
            out.append(routing[key])
    return out
