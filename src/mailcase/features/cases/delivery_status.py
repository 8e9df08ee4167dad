"""Delivery status of a case's outbound emails (read side only, no schema of its own).

Why: issue 4 wants a permanent failure visible *on the case email*, not only in the email log.
A reply or acknowledgement is stored in ``case_emails`` with the outbound queue id (and the
same Message-ID) it was enqueued with, so the queue's own rows tell what happened to it:
``outbound_messages`` (summary state), ``outbound_recipients`` (per-recipient state and last
reply) and ``bounce_events`` (DSNs that came back later, and our own permanent failures).

One query per case joins all of them, so a case with many emails costs no more than one with
one. A hard bounce event for a recipient wins over the queue's recipient state: a remote MTA
can accept a message (delivered) and send a DSN afterwards.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import Connection, Engine, and_, func, literal, or_, select

from mailcase.features.cases.models import case_emails
from mailcase.features.cases.store import cases as case_store
from mailcase.outbound.bounces.models import bounce_events
from mailcase.outbound.models import outbound_messages, outbound_recipients

__all__ = [
    "DeliveryStatus",
    "RecipientStatus",
    "case_delivery",
    "delivery_by_email",
    "format_delivery",
]

_e = case_emails
_m = outbound_messages
_r = outbound_recipients
_b = bounce_events


class RecipientStatus(TypedDict):
    """One recipient of an outbound case email and what became of it."""

    address: str
    state: str  # queued | deferred | delivered | bounced | suppressed
    last_stage: str | None
    last_reply_code: int | None
    last_reply: str | None
    updated_at: datetime | None
    dsn_status: str | None  # RFC 3464 Status of a bounce event, e.g. "5.1.10"
    dsn_diagnostic: str | None


class DeliveryStatus(TypedDict):
    """The outbound queue's view of one outbound case email."""

    queue_id: str
    state: str  # queued | held | deferred | delivered | bounced
    recipients: list[RecipientStatus]
    delivered_at: datetime | None
    bounced_at: datetime | None


def _message_state(queue_state: str, recipients: list[RecipientStatus]) -> str:
    states = {r["state"] for r in recipients}
    if queue_state == "queued" and "deferred" in states:
        return "deferred"
    if queue_state in ("queued", "held"):
        return queue_state
    if "bounced" in states or "suppressed" in states:
        return "bounced"
    return queue_state


def delivery_by_email(
    conn: Connection, case_id: int, case_number: int
) -> dict[int, DeliveryStatus]:
    """Delivery status of every outbound email of one case, keyed by case email id.

    Emails are matched to their queue message by the stored queue id; an email stored without
    one falls back to its Message-ID within the case's own source (``case:<number>``). Emails
    with no queue message (e.g. stored before the queue existed) are left out."""
    source = f"case:{case_store.format_number(case_number)}"
    on_message = or_(
        _m.c.queue_id == _e.c.outbound_queue_id,
        and_(
            _e.c.outbound_queue_id.is_(None),
            _e.c.message_id.is_not(None),
            _m.c.message_id == _e.c.message_id,
            _m.c.source == literal(source),
        ),
    )
    stmt = (
        select(
            _e.c.id, _m.c.queue_id, _m.c.state, _m.c.finished_at,
            _r.c.address, _r.c.state, _r.c.last_stage, _r.c.last_reply_code, _r.c.last_reply,
            _r.c.updated_at, _b.c.kind, _b.c.status, _b.c.diagnostic, _b.c.time,
        )
        .select_from(
            _e.join(_m, on_message)
            .outerjoin(_r, _r.c.message_pk == _m.c.id)
            .outerjoin(
                _b,
                and_(
                    _b.c.outbound_queue_id == _m.c.queue_id,
                    func.lower(_b.c.recipient) == func.lower(_r.c.address),
                ),
            )
        )
        .where(_e.c.case_id == case_id, _e.c.direction == "outbound")
        .order_by(_e.c.id, _r.c.id, _b.c.id)
    )
    out: dict[int, DeliveryStatus] = {}
    finished: dict[int, tuple[str, datetime | None]] = {}
    by_addr: dict[tuple[int, str], RecipientStatus] = {}
    for row in conn.execute(stmt):
        email_id = int(row[0])
        d = out.get(email_id)
        if d is None:
            d = out[email_id] = DeliveryStatus(
                queue_id=str(row[1]), state=str(row[2]), recipients=[],
                delivered_at=None, bounced_at=None,
            )
            finished[email_id] = (str(row[2]), row[3])
        address = row[4]
        if address is None:
            continue
        rc = by_addr.get((email_id, address))
        if rc is None:
            rc = by_addr[(email_id, address)] = RecipientStatus(
                address=address, state=str(row[5]), last_stage=row[6],
                last_reply_code=None if row[7] is None else int(row[7]), last_reply=row[8],
                updated_at=row[9], dsn_status=None, dsn_diagnostic=None,
            )
            d["recipients"].append(rc)
        kind: Any = row[10]
        if kind is not None and rc["dsn_status"] is None:
            rc["dsn_status"] = row[11]
            rc["dsn_diagnostic"] = row[12]
            if kind == "hard" and rc["state"] != "suppressed":
                rc["state"] = "bounced"
                when: datetime | None = row[13]
                if when is not None and (d["bounced_at"] is None or when < d["bounced_at"]):
                    d["bounced_at"] = when
    for email_id, d in out.items():
        queue_state, finished_at = finished[email_id]
        d["state"] = _message_state(queue_state, d["recipients"])
        if d["state"] == "delivered":
            d["delivered_at"] = finished_at
        elif d["state"] == "bounced" and d["bounced_at"] is None:
            d["bounced_at"] = finished_at
    return out


def case_delivery(engine: Engine, number: int | str) -> dict[int, DeliveryStatus] | None:
    """`delivery_by_email` for case `number`; None if there is no such case."""
    n = case_store.parse_number(number)
    with engine.connect() as conn:
        case_id = case_store.case_by_number(conn, n)
        if case_id is None:
            return None
        return delivery_by_email(conn, case_id, n)


def format_delivery(d: DeliveryStatus) -> list[str]:
    """Text lines for `mailcase cases show`: the summary, then one line per recipient."""
    when = d["delivered_at"] or d["bounced_at"]
    lines = [f"Delivery: {d['state']} (queue {d['queue_id']}"
             + (f", {when.isoformat()})" if when else ")")]
    for rc in d["recipients"]:
        reply = " ".join(
            str(x) for x in (rc["last_reply_code"], rc["last_reply"]) if x not in (None, "")
        )
        parts = [f"  {rc['address']}: {rc['state']}"]
        if rc["last_stage"] and rc["state"] != "delivered":
            parts.append(f"at {rc['last_stage']}")
        if rc["dsn_status"]:
            parts.append(f"dsn {rc['dsn_status']}")
        if reply:
            parts.append(f"- {reply}")
        lines.append(" ".join(parts))
    return lines
