"""The records written on the accept path and their rows (private to storage).

`SpooledMessage` and `LogEntry` are re-exported by `mailcase.storage.spool`. They are plain
frozen values built by the SMTP session; turning them into rows here keeps the spool and
`emaillog.append` writing exactly the same thing.

Text the peer chose is cleaned before it reaches the database: a NUL character or a lone
surrogate (8-bit input decoded with ``surrogateescape``) would make PostgreSQL or the driver
refuse the row, and a refused row means a 451 on every retry of that message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "DIRECTIONS",
    "LogEntry",
    "MESSAGE_ID_MAX",
    "OUTCOMES",
    "ACCEPTED_LOG_FROM_MESSAGE",
    "SpooledMessage",
    "accepted_log_row",
    "clean_text",
    "log_row",
    "message_row",
]

DIRECTIONS = ("inbound", "outbound")
#: Outcomes of the email log, each naming one event: accepted / rejected (SMTP's answer),
#: deferred (tried again later), processed (stored into its destination: a case, an inbox),
#: quarantined, discarded (taken, then dropped by policy: raw message kept), delivered and
#: bounced (outbound, or a non-delivery notice sent), suppressed (an automatic message not
#: sent by policy: loop, limit, suppression list), failed (a message we meant to send could
#: not be made). `mailcase log --outcome` and the API offer exactly these.
OUTCOMES = ("accepted", "rejected", "deferred", "processed", "quarantined", "discarded",
            "delivered", "bounced", "suppressed", "failed")
#: Longest Message-ID kept in the indexed column: a PostgreSQL btree entry must stay < 2704 bytes.
MESSAGE_ID_MAX = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class SpooledMessage:
    """One accepted message: envelope, session facts and the full RFC 5322 content."""

    queue_id: str
    received_at: datetime
    client_ip: str
    helo: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    tls_version: str | None = None
    tls_cipher: str | None = None
    tls_bits: int | None = None
    requiretls: bool = False
    smtputf8: bool = False
    body_type: str | None = None
    size: int
    message_id: str | None = None
    content: bytes | bytearray | memoryview
    #: Fetched mail: whose Authentication-Results count (None: SMTP mail, checked ourselves).
    trusted_authserv_ids: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LogEntry:
    """One email-log event; `direction` and `outcome` are checked on creation."""

    time: datetime
    direction: str = "inbound"
    queue_id: str | None = None
    client_ip: str | None = None
    helo: str | None = None
    mail_from: str | None = None
    rcpt_to: tuple[str, ...] = ()
    tls_version: str | None = None
    tls_cipher: str | None = None
    requiretls: bool = False
    size: int | None = None
    message_id: str | None = None
    outcome: str
    reply_code: int | None = None
    reply_text: str | None = None
    reason: str | None = None
    # Outbound facts (see `mailcase.storage.models.EmailLog`).
    remote_host: str | None = None
    remote_ip: str | None = None
    remote_port: int | None = None
    relay: str | None = None
    tls_mode: str | None = None
    tls_verified: bool | None = None
    tls_basis: str | None = None
    tls_policy: str | None = None
    tls_fallback: str | None = None
    attempt: int | None = None
    delay: float | None = None
    stage: str | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {self.direction!r}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {self.outcome!r}")
        if self.time.tzinfo is None:
            raise ValueError("LogEntry.time must be timezone-aware (UTC)")


def clean_text(value: str) -> str:
    """`value` with NUL characters as U+FFFD and lone surrogates as "?"."""
    if value.isascii():  # the usual case, without encoding a copy to look for surrogates
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")  # lone surrogate -> "?"
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value


def _opt(value: str | None) -> str | None:
    return None if value is None else clean_text(value)


def _list(values: Iterable[str]) -> list[str]:
    return [clean_text(v) for v in values]


def message_row(m: SpooledMessage) -> dict[str, Any]:
    """The inbound_messages row for `m` (its content goes to inbound_contents)."""
    message_id = m.message_id
    if message_id is not None:
        message_id = clean_text(message_id)[:MESSAGE_ID_MAX]
    return {
        "queue_id": m.queue_id,
        "received_at": m.received_at,
        "client_ip": clean_text(m.client_ip),
        "helo": clean_text(m.helo),
        "mail_from": clean_text(m.mail_from),
        "rcpt_to": _list(m.rcpt_to),
        "tls_version": m.tls_version,
        "tls_cipher": m.tls_cipher,
        "tls_bits": m.tls_bits,
        "requiretls": m.requiretls,
        "smtputf8": m.smtputf8,
        "body_type": _opt(m.body_type),
        "size": m.size,
        "message_id": message_id,
        "state": "received",
        "attempts": 0,
        "trusted_authserv_ids": (None if m.trusted_authserv_ids is None
                                 else _list(m.trusted_authserv_ids)),
    }


def log_row(e: LogEntry) -> dict[str, Any]:
    """The email_log row for `e`."""
    return {
        "time": e.time,
        "direction": e.direction,
        "queue_id": e.queue_id,
        "client_ip": _opt(e.client_ip),
        "helo": _opt(e.helo),
        "mail_from": _opt(e.mail_from),
        "rcpt_to": _list(e.rcpt_to),
        "tls_version": e.tls_version,
        "tls_cipher": e.tls_cipher,
        "requiretls": e.requiretls,
        "size": e.size,
        "message_id": _opt(e.message_id),
        "outcome": e.outcome,
        "reply_code": e.reply_code,
        "reply_text": _opt(e.reply_text),
        "reason": _opt(e.reason),
        "remote_host": _opt(e.remote_host),
        "remote_ip": e.remote_ip,
        "remote_port": e.remote_port,
        "relay": _opt(e.relay),
        "tls_mode": e.tls_mode,
        "tls_verified": e.tls_verified,
        "tls_basis": e.tls_basis,
        "tls_policy": e.tls_policy,
        "tls_fallback": _opt(e.tls_fallback),
        "attempt": e.attempt,
        "delay": e.delay,
        "stage": e.stage,
    }


#: The email-log entry of an accepted message is its message row's facts (email_log column:
#: inbound_messages column) plus the reply. One mapping for both writers: SQLite copies the
#: columns in SQL from the row just inserted (no second row built and bound in Python on the
#: accept path), PostgreSQL goes through `accepted_log_row`.
ACCEPTED_LOG_FROM_MESSAGE = {
    "time": "received_at",
    "queue_id": "queue_id",
    "client_ip": "client_ip",
    "helo": "helo",
    "mail_from": "mail_from",
    "rcpt_to": "rcpt_to",
    "tls_version": "tls_version",
    "tls_cipher": "tls_cipher",
    "requiretls": "requiretls",
    "size": "size",
    "message_id": "message_id",
}


def accepted_log_row(row: dict[str, Any], reply_code: int, reply_text: str) -> dict[str, Any]:
    """The email_log row "accepted" for the inbound_messages `row` (from `message_row`)."""
    entry = {log: row[msg] for log, msg in ACCEPTED_LOG_FROM_MESSAGE.items()}
    entry.update(direction="inbound", outcome="accepted", reply_code=reply_code,
                 reply_text=clean_text(reply_text))
    return entry
