"""Which recipients the gateway accepts, decided without I/O.

Only configured receiving addresses are accepted; mailcase never relays. An address at a
domain we receive for but that is not configured is an unknown mailbox (550 5.1.1); an
address at any other domain is a relay attempt (550 5.7.1). Both are refused at RCPT time,
so no bounce is ever sent to a forged sender (no backscatter).
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
        domain = key.rpartition("@")[2]
        if domain in local_domains:
            return Reject(R.UNKNOWN_RECIPIENT, "unknown recipient")
        return Reject(R.RELAY_DENIED, "relay denied")
    if not rule.enabled:
        return Reject(R.MAILBOX_DISABLED, "address disabled")
    if rule.require_tls and not tls_active:
        return Reject(R.MUST_STARTTLS, "TLS required for this address")
    return Accept(rule)
