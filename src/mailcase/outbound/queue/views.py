"""What people look at in the outbound queue (the CLI and the API), and `retry_now`."""


from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Engine,
    func,
    select,
    update,
)

from mailcase.outbound.models import (
    outbound_attempts,
    outbound_messages,
    outbound_recipients,
)
from mailcase.storage.db import begin_write
from mailcase.storage.models import utcnow

__all__ = [
    "list_messages",
    "queue_counts",
    "retry_now",
    "show_message",
]


def retry_now(engine: Engine, queue_id: str, *, now: datetime | None = None) -> bool:
    """Make a queued message due now; False if there is no queued message with that id."""
    m = outbound_messages
    with begin_write(engine) as conn:
        n = conn.execute(
            update(m).where(m.c.queue_id == queue_id, m.c.state == "queued")
            .values(next_attempt_at=now or utcnow())
        ).rowcount
    return bool(n)


def list_messages(
    engine: Engine, *, state: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Queue rows, newest first, with recipient counts per state."""
    m, r = outbound_messages, outbound_recipients
    stmt = select(
        m.c.queue_id, m.c.created_at, m.c.state, m.c.category, m.c.mail_from, m.c.message_id,
        m.c.source, m.c.size, m.c.attempts, m.c.next_attempt_at, m.c.finished_at, m.c.id,
    ).order_by(m.c.id.desc()).limit(limit)
    if state is not None:
        stmt = stmt.where(m.c.state == state)
    with engine.connect() as conn:
        rows = [dict(x._mapping) for x in conn.execute(stmt)]
        ids = [x["id"] for x in rows]
        rcpts: dict[int, list[Any]] = {}
        if ids:
            for x in conn.execute(
                select(r.c.message_pk, r.c.address, r.c.state).where(r.c.message_pk.in_(ids))
                .order_by(r.c.id)
            ):
                rcpts.setdefault(x.message_pk, []).append(x)
    for row in rows:
        pk = row.pop("id")
        row["recipients"] = [{"address": x.address, "state": x.state} for x in rcpts.get(pk, [])]
        if row["state"] != "queued":
            row["next_attempt_at"] = None
    return rows


def show_message(engine: Engine, queue_id: str) -> dict[str, Any] | None:
    """One message with its recipients and every attempt (newest last), or None."""
    m, r, a = outbound_messages, outbound_recipients, outbound_attempts
    with engine.connect() as conn:
        row = conn.execute(select(m).where(m.c.queue_id == queue_id)).first()
        if row is None:
            return None
        out = dict(row._mapping)
        pk = out.pop("id")
        rc = {x.id: dict(x._mapping) for x in conn.execute(
            select(r).where(r.c.message_pk == pk).order_by(r.c.id))}
        attempts = []
        for x in conn.execute(select(a).where(a.c.message_pk == pk).order_by(a.c.id)):
            d = dict(x._mapping)
            d["recipient"] = rc[d.pop("recipient_pk")]["address"]
            d.pop("message_pk")
            d.pop("id")
            attempts.append(d)
    for v in rc.values():
        v.pop("id")
        v.pop("message_pk")
    if out["state"] != "queued":
        out["next_attempt_at"] = None
    out["recipients"] = list(rc.values())
    out["attempts"] = attempts
    return out


def queue_counts(engine: Engine) -> dict[str, int]:
    """Messages per state (for metrics and `outbound list`)."""
    m = outbound_messages
    with engine.connect() as conn:
        return {s: int(n) for s, n in conn.execute(
            select(m.c.state, func.count()).group_by(m.c.state))}
