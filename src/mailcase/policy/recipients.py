"""Which recipients the gateway accepts, decided without I/O.

Only configured receiving addresses are accepted; mailcase never relays. An address at a
domain we receive for but that is not configured is an unknown mailbox (550 5.1.1); an
address at any other domain is a relay attempt (550 5.7.1). Both are refused at RCPT time,
so no bounce is ever sent to a forged sender (no backscatter).

The one address accepted without being configured is `postmaster` (RFC 5321 §4.5.1: a
server that delivers mail MUST accept the case-insensitive local part "postmaster" for the
domains it serves, and `<Postmaster>` without a domain, §4.1.1.3), so that other
administrators can always reach ours. It gets no TLS requirement: it must stay reachable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mailcase.smtp import replies as R

__all__ = ["Accept", "AddressRule", "Reject", "decide_recipient"]


@dataclass(frozen=True, slots=True)
class AddressRule:
    """A receiving address as policy sees it (lowercased)."""

    address: str
    require_tls: bool = False
    enabled: bool = True

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class Accept:
    rule: AddressRule


@dataclass(frozen=True, slots=True)
class Reject:
    reply: R.Reply
    reason: str


def decide_recipient(
    recipient: str,
    rules: Mapping[str, AddressRule],
    local_domains: frozenset[str],
    *,
    tls_active: bool,
) -> Accept | Reject:
    """Decide one RCPT. `recipient` is local@domain as received; matching is case-insensitive."""
    key = recipient.lower()
    rule = rules.get(key)
    if rule is None:
        local, _, domain = key.rpartition("@") if "@" in key else (key, "", "")
        if local == "postmaster" and (not domain or domain in local_domains):
            return Accept(AddressRule(key))
        if domain in local_domains:
            return Reject(R.UNKNOWN_RECIPIENT, "unknown recipient")
        return Reject(R.RELAY_DENIED, "relay denied")
    if not rule.enabled:
        return Reject(R.MAILBOX_DISABLED, "address disabled")
    if rule.require_tls and not tls_active:
        return Reject(R.MUST_STARTTLS, "TLS required for this address")
    return Accept(rule)
