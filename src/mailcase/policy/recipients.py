"""Which recipients the gateway accepts, decided without I/O.

Only configured receiving addresses are accepted; mailcase never relays. An address at a
domain we receive for but that is not configured is an unknown mailbox (550 5.1.1); an
address at any other domain is a relay attempt (550 5.7.1). Both are refused at RCPT time,
so no bounce is ever sent to a forged sender (no backscatter).

The one address accepted without being configured is `postmaster` (RFC 5321 §4.5.1: a
server that delivers mail MUST accept the case-insensitive local part "postmaster" for the
domains it serves, and `<Postmaster>` without a domain, §4.1.1.3), so that other
administrators can always reach ours. It gets no TLS requirement: it must stay reachable.

Signed VERP bounce addresses (`bounce+<queue id>.<mac>@<domain>`, the return path of our own
outbound mail) are accepted too, at any domain, when their MAC verifies: `AddressRules` knows
the key, so forged or altered bounce addresses get the usual 550 and only the HMAC of a
recipient that looks like one is ever computed (the RCPT hot path stays a dict lookup).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from mailcase.smtp import replies as R
from mailcase.smtp.reasons import RejectReason

__all__ = [
    "VERP_PREFIX",
    "Accept",
    "AddressRule",
    "AddressRules",
    "Reject",
    "decide_recipient",
    "verp_address",
    "verp_queue_id",
]

#: Local-part prefix of VERP return paths.
VERP_PREFIX = "bounce+"
_VERP_MAC_LEN = 16  # base32 characters: 80 bits, far beyond guessing over SMTP
_VERP_CONTEXT = b"mailcase-verp-v1\0"


@dataclass(frozen=True, slots=True)
class AddressRule:
    """A receiving address as policy sees it (lowercased)."""

    address: str
    require_tls: bool = False
    enabled: bool = True
    routing: bool = False  # an Email-to-Case routing address (the daily case limit applies)

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
    code: RejectReason  # the metrics label: a closed set (`reason` is for people)


def decide_recipient(
    recipient: str,
    rules: Mapping[str, AddressRule],
    local_domains: frozenset[str],
    *,
    tls_active: bool,
    routing_refusal: R.Reply | None = None,
) -> Accept | Reject:
    """Decide one RCPT. `recipient` is local@domain as received; matching is case-insensitive.

    `routing_refusal`: the reply for routing addresses while the daily case limit is reached
    (451 to requeue, 550 to bounce; see `features.cases.automation.limits`): refusing at RCPT
    time costs the sender's MTA a retry or its own bounce, and sends no backscatter from us.
    """
    key = recipient.lower()
    rule = rules.get(key)
    if rule is None:
        local, _, domain = key.rpartition("@") if "@" in key else (key, "", "")
        if local == "postmaster" and (not domain or domain in local_domains):
            return Accept(AddressRule(key))
        if domain in local_domains:
            return Reject(
                R.UNKNOWN_RECIPIENT, "unknown recipient", RejectReason.UNKNOWN_RECIPIENT
            )
        return Reject(R.RELAY_DENIED, "relay denied", RejectReason.RELAY_DENIED)
    if not rule.enabled:
        return Reject(R.MAILBOX_DISABLED, "address disabled", RejectReason.ADDRESS_DISABLED)
    if rule.require_tls and not tls_active:
        return Reject(
            R.MUST_STARTTLS, "TLS required for this address", RejectReason.ADDRESS_REQUIRES_TLS
        )
    if rule.routing and routing_refusal is not None:
        return Reject(
            routing_refusal, "daily case limit reached", RejectReason.CASE_LIMIT_REACHED
        )
    return Accept(rule)


def _verp_mac(key: bytes, queue_id: str, domain: str) -> str:
    msg = _VERP_CONTEXT + queue_id.lower().encode() + b"\0" + domain.lower().encode()
    digest = hmac.new(key, msg, hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode().lower()[:_VERP_MAC_LEN]


def verp_address(key: bytes, queue_id: str, domain: str) -> str:
    """The signed bounce address of one outbound message (lower case, case-insensitive)."""
    qid = queue_id.lower()
    if not qid.isalnum() or not qid.isascii():
        raise ValueError(f"queue id {queue_id!r} must be letters and digits")
    return f"{VERP_PREFIX}{qid}.{_verp_mac(key, qid, domain)}@{domain.lower()}"


def verp_queue_id(key: bytes, address: str) -> str | None:
    """The queue id (lower case) a bounce address was made for; None if not one of ours."""
    local, at, domain = address.lower().rpartition("@")
    if not at or not local.startswith(VERP_PREFIX):
        return None
    qid, dot, mac = local[len(VERP_PREFIX):].rpartition(".")
    if not dot or not qid or len(mac) != _VERP_MAC_LEN or not qid.isalnum() or not qid.isascii():
        return None
    if not hmac.compare_digest(mac, _verp_mac(key, qid, domain)):
        return None
    return qid


class AddressRules(Mapping[str, AddressRule]):
    """Receiving addresses by lowercased address, plus VERP bounce addresses signed with
    `verp_key` (None: none accepted). Looked up like a dict by `decide_recipient`."""

    __slots__ = ("_rules", "verp_key")

    def __init__(
        self, rules: Mapping[str, AddressRule] | None = None, verp_key: bytes | None = None
    ) -> None:
        self._rules = dict(rules or {})
        self.verp_key = verp_key

    def __getitem__(self, key: str) -> AddressRule:
        rule = self._rules.get(key)
        if rule is not None:
            return rule
        if (
            self.verp_key is not None
            and key.startswith(VERP_PREFIX)
            and verp_queue_id(self.verp_key, key) is not None
        ):
            return AddressRule(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)
