"""The suppression list and the record of bounces.

A permanent failure (status 5.x.x) puts the recipient on the suppression list, so later mail
to it is stored as "suppressed" and never sent, until `mailcase bounces clear`. A temporary one
(4.x.x, or a "delayed" report) is recorded only. Never suppressed, only recorded: the
recipient of a bounce that itself bounced (a bounce of a bounce), and our own addresses
(`is_own_address`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection, Engine

from mailcase import maillog
from mailcase.outbound.bounces.models import bounce_events, bounced_addresses
from mailcase.policy.recipients import VERP_PREFIX
from mailcase.storage import messages
from mailcase.storage.db import begin_write
from mailcase.storage.models import receiving_addresses, utcnow
from mailcase.storage.spool import LogEntry
from mailcase.storage.sql import insert_ignore, upsert

__all__ = [
    "BounceInfo",
    "BounceRecord",
    "clear",
    "count_suppressed",
    "is_own_address",
    "is_suppressed",
    "list_bounces",
    "list_events",
    "record_bounce",
    "suppress",
    "suppressed_among",
]


@dataclass(frozen=True, slots=True)
class BounceRecord:
    """A suppressed address as listed."""

    address: str
    status: str | None
    reason: str | None
    queue_id: str | None
    source: str
    bounces: int
    first_bounced_at: dt.datetime
    last_bounced_at: dt.datetime


@dataclass(frozen=True, slots=True)
class BounceInfo:
    """One recorded bounce (hard or soft)."""

    time: dt.datetime
    recipient: str
    kind: str
    status: str | None
    action: str | None
    outbound_queue_id: str | None
    message_id: str | None
    remote_mta: str | None
    diagnostic: str | None
    source: str


def _norm(address: str) -> str:
    return address.strip().strip("<>").lower()


#: Local parts that are ours on any domain we answer for: the bounce senders (RFC 5321 §4.5.1).
_SYSTEM_LOCAL_PARTS = ("postmaster", "mailer-daemon")


def is_own_address(conn: Connection, address: str) -> bool:
    """Is `address` one of ours: a receiving (or routing) address, a VERP bounce address, or
    postmaster / mailer-daemon? Ours are never suppressed: a remote refusing them says
    something about that remote, and suppressing them would silence our own users."""
    addr = _norm(address)
    local = addr.rpartition("@")[0]
    if addr.startswith(VERP_PREFIX) or local in _SYSTEM_LOCAL_PARTS:
        return True
    row = conn.execute(
        select(receiving_addresses.c.id).where(receiving_addresses.c.address == addr)
    ).first()
    return row is not None


def is_suppressed(conn: Connection, address: str) -> bool:
    """Is mail to `address` blocked because it hard-bounced (until `clear`)?"""
    row = conn.execute(
        select(bounced_addresses.c.id).where(bounced_addresses.c.address == _norm(address))
    ).first()
    return row is not None


def suppressed_among(conn: Connection, addresses: Sequence[str]) -> set[str]:
    """Which of `addresses` (lowercased) are suppressed: one query for a whole envelope."""
    wanted = sorted({_norm(a) for a in addresses})
    if not wanted:
        return set()
    rows = conn.execute(
        select(bounced_addresses.c.address).where(bounced_addresses.c.address.in_(wanted))
    )
    return {r[0] for r in rows}


def suppress(
    conn: Connection,
    address: str,
    *,
    status: str | None,
    reason: str | None,
    queue_id: str | None = None,
    source: str = "dsn",
) -> None:
    """Put `address` on the suppression list (or count one more bounce if it is on it)."""
    addr = _norm(address)
    now = utcnow()
    values = {
        "address": addr, "status": status, "reason": (reason or "")[:2000] or None,
        "queue_id": queue_id, "source": source[:16], "bounces": 1,
        "first_bounced_at": now, "last_bounced_at": now,
    }
    stmt = upsert(
        conn, bounced_addresses, values,
        key=[bounced_addresses.c.address],
        set_={
            "status": status, "reason": values["reason"], "queue_id": queue_id,
            "last_bounced_at": now, "bounces": bounced_addresses.c.bounces + 1,
        },
    )
    conn.execute(stmt)


def clear(engine: Engine, address: str) -> bool:
    """Take `address` off the suppression list; False if it was not on it."""
    with begin_write(engine) as conn:
        done = conn.execute(
            delete(bounced_addresses).where(bounced_addresses.c.address == _norm(address))
        )
    if done.rowcount:
        maillog.event("bounce", None, cleared=f"<{_norm(address)}>")
    return bool(done.rowcount)


def list_bounces(engine: Engine, *, limit: int = 1000) -> list[BounceRecord]:
    """The suppression list, most recent bounce first."""
    c = bounced_addresses.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.address, c.status, c.reason, c.queue_id, c.source, c.bounces,
                   c.first_bounced_at, c.last_bounced_at)
            .order_by(c.last_bounced_at.desc(), c.id.desc())
            .limit(limit)
        ).all()
    return [BounceRecord(**r._mapping) for r in rows]


def list_events(
    engine: Engine, *, recipient: str | None = None, limit: int = 1000
) -> list[BounceInfo]:
    """Recorded bounces (hard and soft), newest first."""
    c = bounce_events.c
    stmt = select(c.time, c.recipient, c.kind, c.status, c.action, c.outbound_queue_id,
                  c.message_id, c.remote_mta, c.diagnostic, c.source)
    if recipient is not None:
        stmt = stmt.where(c.recipient == _norm(recipient))
    with engine.connect() as conn:
        rows = conn.execute(stmt.order_by(c.id.desc()).limit(limit)).all()
    return [BounceInfo(**r._mapping) for r in rows]


def count_suppressed(engine: Engine) -> int:
    """How many addresses are suppressed (for metrics and `bounces list`)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(bounced_addresses)).scalar()
                   or 0)


def _kind(status: str | None, action: str | None) -> str | None:
    """hard / soft / None (not a failure at all: delivered, relayed, expanded)."""
    a = (action or "failed").lower()
    if a not in {"failed", "delayed"}:
        return None
    if a == "failed" and (status or "").startswith("5"):
        return "hard"
    return "soft"


def record_bounce(
    conn: Connection,
    *,
    source: str,
    recipient: str,
    status: str | None,
    action: str | None = "failed",
    outbound_queue_id: str | None = None,
    message_id: str | None = None,
    remote_mta: str | None = None,
    diagnostic: str | None = None,
    mail_from: str | None = None,
    keep: str | None = None,
) -> str | None:
    """Record one bounce; suppress the address when it is hard, unless `keep` says why not
    (a bounce of a bounce, one of our own addresses), or the address is ours. Returns the kind
    recorded (None when the report was no failure or `source` already recorded it)."""
    kind = _kind(status, action)
    if kind is None:
        return None
    addr = _norm(recipient)
    values = {
        "time": utcnow(), "source": source[:100], "recipient": addr[:320], "kind": kind,
        "status": (status or None) and status[:16], "action": (action or None) and action[:16],
        "outbound_queue_id": outbound_queue_id, "message_id": message_id,
        "remote_mta": remote_mta, "diagnostic": (diagnostic or "")[:2000] or None,
    }
    inserted = conn.execute(
        insert_ignore(conn, bounce_events).values(**values).returning(bounce_events.c.id)
    ).first()
    if inserted is None:
        return None  # the same report again (e.g. a message processed after a crash)
    if kind == "hard" and keep is None and is_own_address(conn, addr):
        keep = "one of our own addresses"
    if kind == "hard" and keep is None:
        suppress(conn, addr, status=status, reason=diagnostic, queue_id=outbound_queue_id,
                 source=source.partition(":")[0])
    messages.insert_log(
        conn,
        LogEntry(
            time=values["time"],  # type: ignore[arg-type]
            direction="outbound",
            queue_id=outbound_queue_id,
            client_ip=None,
            helo=None,
            mail_from=mail_from,
            rcpt_to=(addr,),
            tls_version=None,
            tls_cipher=None,
            requiretls=False,
            size=None,
            message_id=message_id,
            outcome="bounced" if kind == "hard" else "deferred",
            reply_code=None,
            reply_text=(diagnostic or None) and diagnostic[:2000],
            reason=f"{source}: status {status or '-'}"
            + (f" from {remote_mta}" if remote_mta else "")
            + (f"; not suppressed: {keep}" if kind == "hard" and keep is not None
               else "; address suppressed" if kind == "hard"
               else "; soft bounce, recorded only"),
        ),
    )
    maillog.bounce(
        outbound_queue_id, recipient=addr, status=status, kind=kind, source=source,
        remote_mta=remote_mta,
    )
    return kind
