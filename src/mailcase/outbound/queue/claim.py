"""The delivery engine's side of the outbound queue: claim due messages, record results.

`claim` takes due messages for one delivery round (an "inflight" attempt row per pending
recipient, under a lease so another node can take over after a crash); `record` writes what
the attempts found and schedules the next one. The Deliverability access level holds back the
categories it does not let out (`release_held`).
"""


from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    bindparam,
    func,
    insert,
    not_,
    select,
    true,
    update,
)

from mailcase.outbound.models import (
    CATEGORIES,
    outbound_attempts,
    outbound_contents,
    outbound_messages,
    outbound_recipients,
)
from mailcase.storage._records import LogEntry, log_row
from mailcase.storage.db import begin_write
from mailcase.storage.models import email_log, utcnow
from mailcase.storage.sql import claim_rows

__all__ = [
    "ClaimedMessage",
    "ClaimedRecipient",
    "Completion",
    "OnBounce",
    "PASSWORD_RESET_SOURCE",
    "RecipientResult",
    "Recorded",
    "Schedule",
    "allowed_categories",
    "claim",
    "record",
    "recover_inflight",
    "release_held",
]

#: Sources of system mail that leaves even at access level "none" (password reset class).
PASSWORD_RESET_SOURCE = "password-reset"  # noqa: S105 - a source prefix, not a secret


def allowed_categories(access_level: str) -> tuple[str, ...]:
    """Categories the Deliverability access level lets out ("none": see `release_held`)."""
    if access_level == "all":
        return CATEGORIES
    return ("system",)


def _allowed(access_level: str) -> ColumnElement[bool]:
    m = outbound_messages
    if access_level == "all":
        return true()
    if access_level == "system":
        return m.c.category == "system"
    # coalesce: NOT (x AND NULL) is NULL in SQL, which would neither hold nor allow
    return and_(
        m.c.category == "system",
        func.coalesce(m.c.source, "").like(f"{PASSWORD_RESET_SOURCE}%"),
    )


@dataclass(frozen=True, slots=True)
class ClaimedRecipient:
    """A pending recipient and the id of its attempt row (written "inflight" at claim)."""

    pk: int
    address: str
    domain: str
    attempt_pk: int


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """A message taken for one delivery round, with its content and pending recipients."""

    pk: int
    queue_id: str
    mail_from: str
    message_id: str | None
    category: str
    source: str | None
    size: int
    created_at: datetime
    attempt: int
    content: bytes
    recipients: tuple[ClaimedRecipient, ...]


def release_held(engine: Engine, access_level: str, *, now: datetime | None = None) -> int:
    """Hold queued mail the access level keeps back; release held mail it now allows."""
    m = outbound_messages
    now = now or utcnow()
    with begin_write(engine) as conn:
        n = conn.execute(
            update(m)
            .where(m.c.state == "held", _allowed(access_level))
            .values(state="queued", next_attempt_at=now)
        ).rowcount
        if access_level != "all":
            conn.execute(
                update(m).where(m.c.state == "queued", not_(_allowed(access_level)))
                .values(state="held")
            )
    return int(n or 0)


def recover_inflight(engine: Engine, *, now: datetime | None = None) -> int:
    """After a restart (single node): make messages whose attempt was in flight due now.

    Their attempt rows are closed as interrupted at the next claim. Only safe when no other
    node may be delivering them: SQLite (one node by construction). On PostgreSQL the claim
    lease does the same once it runs out.
    """
    m, a = outbound_messages, outbound_attempts
    now = now or utcnow()
    inflight = select(a.c.message_pk).where(a.c.result == "inflight").distinct()
    with begin_write(engine) as conn:
        n = conn.execute(
            update(m).where(m.c.state == "queued", m.c.id.in_(inflight))
            .values(next_attempt_at=now)
        ).rowcount
    return int(n or 0)


def claim(
    engine: Engine,
    *,
    limit: int,
    lease: float,
    access_level: str = "all",
    now: datetime | None = None,
    exclude: Sequence[int] = (),
) -> list[ClaimedMessage]:
    """Take up to `limit` due messages: each gets an "inflight" attempt row per pending
    recipient and its next_attempt_at moves `lease` seconds ahead, in one transaction, before
    any connection is opened. PostgreSQL: FOR UPDATE SKIP LOCKED lets nodes claim side by
    side; SQLite: the write lock serialises claimers."""
    m, r, a, c = outbound_messages, outbound_recipients, outbound_attempts, outbound_contents
    now = now or utcnow()
    with begin_write(engine) as conn:
        if access_level != "all":
            conn.execute(
                update(m)
                .where(m.c.state == "queued", m.c.next_attempt_at <= now,
                       not_(_allowed(access_level)))
                .values(state="held")
            )
        stmt = (
            select(m.c.id, m.c.queue_id, m.c.mail_from, m.c.message_id, m.c.category,
                   m.c.source, m.c.size, m.c.created_at, m.c.attempts)
            .where(m.c.state == "queued", m.c.next_attempt_at <= now, _allowed(access_level))
            .order_by(m.c.next_attempt_at, m.c.id)
            .limit(limit)
        )
        if exclude:
            stmt = stmt.where(m.c.id.not_in(list(exclude)))
        stmt = claim_rows(stmt, of=m)
        msgs = conn.execute(stmt).all()
        if not msgs:
            return []
        ids = [row.id for row in msgs]
        interrupted = "4.4.2 interrupted: mailcase stopped during this attempt; retried"
        conn.execute(
            update(a).where(a.c.message_pk.in_(ids), a.c.result == "inflight")
            .values(result="transient", finished_at=now, reply_text=interrupted)
        )
        conn.execute(
            update(m).where(m.c.id.in_(ids)).values(
                next_attempt_at=now + timedelta(seconds=lease), attempts=m.c.attempts + 1
            )
        )
        pending: dict[int, list[Any]] = {}
        for row in conn.execute(
            select(r.c.id, r.c.message_pk, r.c.address, r.c.domain)
            .where(r.c.message_pk.in_(ids), r.c.state.in_(("queued", "deferred")))
            .order_by(r.c.id)
        ):
            pending.setdefault(row.message_pk, []).append(row)
        contents = dict(
            conn.execute(select(c.c.message_pk, c.c.content).where(c.c.message_pk.in_(ids))).all()
        )
        by_pk = {row.id: row for row in msgs}
        attempt_rows = [
            {
                "message_pk": pk, "recipient_pk": rc.id, "attempt": by_pk[pk].attempts + 1,
                "started_at": now, "result": "inflight",
                "seconds_in_queue": (now - by_pk[pk].created_at).total_seconds(),
            }
            for pk in ids for rc in pending.get(pk, [])
        ]
        attempt_ids: dict[int, int] = {}
        if attempt_rows:
            res = conn.execute(
                insert(a).returning(a.c.id, a.c.recipient_pk, sort_by_parameter_order=True),
                attempt_rows,
            )
            attempt_ids = {x.recipient_pk: x.id for x in res}
    out: list[ClaimedMessage] = []
    for mr in msgs:
        rcpts = tuple(
            ClaimedRecipient(rc.id, rc.address, rc.domain, attempt_ids[rc.id])
            for rc in pending.get(mr.id, [])
        )
        out.append(
            ClaimedMessage(
                pk=mr.id, queue_id=mr.queue_id, mail_from=mr.mail_from,
                message_id=mr.message_id, category=mr.category, source=mr.source,
                size=mr.size, created_at=mr.created_at, attempt=mr.attempts + 1,
                content=bytes(contents.get(mr.id, b"")), recipients=rcpts,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """How one recipient's attempt ended, with the facts the email log shows."""

    recipient: ClaimedRecipient
    outcome: str  # "delivered" | "transient" | "permanent"
    stage: str | None = None
    code: int | None = None
    text: str = ""
    remote_host: str | None = None
    remote_ip: str | None = None
    remote_port: int | None = None
    relay: str | None = None
    tls_mode: str | None = None
    tls_version: str | None = None
    tls_cipher: str | None = None
    tls_verified: bool = False
    verified_by: str | None = None
    #: Why the session went on in plaintext after STARTTLS failed (`preferred`), else None.
    tls_fallback: str | None = None
    #: The envelope sender sent in MAIL FROM (the VERP return path), when a session began.
    envelope_from: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """Results of one part of a claimed message; `final` when no other part is running."""

    message: ClaimedMessage
    results: tuple[RecipientResult, ...]
    final: bool


@dataclass(frozen=True, slots=True)
class Recorded:
    """One recipient's recorded outcome, for the maillog line."""

    queue_id: str
    result: RecipientResult
    status: str  # "sent" | "deferred" | "bounced"
    delay: float
    attempt: int


#: ``schedule(created_at, now, attempts) -> datetime | None`` (None: give up; see retry.py).
Schedule = Callable[[datetime, datetime, int], "datetime | None"]

#: ``on_bounce(conn, message_row, recipients, reply)``: permanent failures of one message.
OnBounce = Callable[[Connection, dict[str, Any], list[dict[str, Any]], str], None]

_STATE = {"delivered": "delivered", "transient": "deferred", "permanent": "bounced"}

_STATUS = {"delivered": "sent", "transient": "deferred", "permanent": "bounced"}


def _tls_basis(res: RecipientResult) -> str | None:
    """On what the certificate was checked: none, ca (MTA-STS and DANE add their own)."""
    if not res.tls_version:
        return None
    return (res.verified_by or "ca").lower() if res.tls_verified else "none"


def _log_entry(msg: ClaimedMessage, res: RecipientResult, outcome: str, now: datetime,
               delay: float) -> LogEntry:
    """The email-log row of one recipient's attempt: each fact in its own column."""
    return LogEntry(
        time=now, direction="outbound", queue_id=msg.queue_id,
        # The envelope sender actually sent (VERP) when a session got that far.
        mail_from=res.envelope_from if res.envelope_from is not None else msg.mail_from,
        rcpt_to=(res.recipient.address,),
        tls_version=res.tls_version, tls_cipher=res.tls_cipher, size=msg.size,
        message_id=msg.message_id, outcome=outcome, reply_code=res.code,
        reply_text=res.text or None, reason=res.tls_fallback,
        remote_host=res.remote_host, remote_ip=res.remote_ip, remote_port=res.remote_port,
        relay=res.relay, tls_mode=res.tls_mode,
        tls_verified=res.tls_verified if res.remote_host else None,
        tls_basis=_tls_basis(res), tls_fallback=res.tls_fallback, attempt=msg.attempt,
        delay=round(delay, 3), stage=res.stage if outcome != "delivered" else None,
    )


def record(
    engine: Engine,
    completions: Sequence[Completion],
    *,
    schedule: Schedule,
    on_bounce: OnBounce | None = None,
    now: datetime | None = None,
) -> list[Recorded]:
    """Write the results (recipients, attempt rows, email log) in one transaction; for final
    parts also the message's state or its next attempt. Recipients still deferred when the
    queue time is up bounce; `on_bounce` is called with every message's new bounces."""
    m, r, a = outbound_messages, outbound_recipients, outbound_attempts
    now = now or utcnow()
    rec_rows: list[dict[str, Any]] = []
    att_rows: list[dict[str, Any]] = []
    logs: list[LogEntry] = []
    done: list[Recorded] = []
    bounces: dict[int, list[RecipientResult]] = {}
    for comp in completions:
        msg = comp.message
        delay = (now - msg.created_at).total_seconds()
        for res in comp.results:
            rc = res.recipient
            rec_rows.append({
                "b_id": rc.pk, "state": _STATE[res.outcome], "last_stage": res.stage,
                "last_reply_code": res.code, "last_reply": res.text or None, "updated_at": now,
            })
            att_rows.append({
                "b_id": rc.attempt_pk, "finished_at": now,
                "result": res.outcome, "relay": res.relay, "remote_host": res.remote_host,
                "remote_ip": res.remote_ip, "remote_port": res.remote_port,
                "tls_mode": res.tls_mode, "tls_version": res.tls_version,
                "tls_cipher": res.tls_cipher, "tls_verified": res.tls_verified,
                "verified_by": res.verified_by, "stage": res.stage, "reply_code": res.code,
                "reply_text": res.text or None, "tls_fallback": res.tls_fallback,
            })
            outcome = {"delivered": "delivered", "transient": "deferred",
                       "permanent": "bounced"}[res.outcome]
            logs.append(_log_entry(msg, res, outcome, now, delay))
            done.append(Recorded(msg.queue_id, res, _STATUS[res.outcome], delay, msg.attempt))
            if res.outcome == "permanent":
                bounces.setdefault(msg.pk, []).append(res)
    with begin_write(engine) as conn:
        if rec_rows:
            conn.execute(
                update(r).where(r.c.id == bindparam("b_id")).values(
                    state=bindparam("state"), attempts=r.c.attempts + 1,
                    last_stage=bindparam("last_stage"),
                    last_reply_code=bindparam("last_reply_code"),
                    last_reply=bindparam("last_reply"), updated_at=bindparam("updated_at"),
                ),
                rec_rows,
            )
            cols = [k for k in att_rows[0] if k != "b_id"]
            conn.execute(
                update(a).where(a.c.id == bindparam("b_id"))
                .values({k: bindparam(k) for k in cols}),
                att_rows,
            )
        finals = [c.message for c in completions if c.final]
        if finals:
            states: dict[int, list[Any]] = {}
            for row in conn.execute(
                select(r.c.id, r.c.message_pk, r.c.address, r.c.state, r.c.last_stage,
                       r.c.last_reply_code, r.c.last_reply)
                .where(r.c.message_pk.in_([f.pk for f in finals]))
            ):
                states.setdefault(row.message_pk, []).append(row)
            later: list[dict[str, Any]] = []
            ended: list[dict[str, Any]] = []
            for msg in finals:
                _finish(conn, msg, states.get(msg.pk, []), now, schedule, bounces, logs, done,
                        later, ended)
            if later:
                conn.execute(
                    update(m).where(m.c.id == bindparam("b_id"))
                    .values(next_attempt_at=bindparam("b_when")),
                    later,
                )
            if ended:
                conn.execute(
                    update(m).where(m.c.id == bindparam("b_id"))
                    .values(state=bindparam("b_state"), finished_at=now),
                    ended,
                )
        if logs:
            conn.execute(insert(email_log), [log_row(e) for e in logs])
        if on_bounce is not None:
            for pk, items in bounces.items():
                row = conn.execute(select(m).where(m.c.id == pk)).one()
                rcpts = [
                    {"address": i.recipient.address, "stage": i.stage, "code": i.code,
                     "reply": i.text, "remote_host": i.remote_host}
                    for i in items
                ]
                on_bounce(conn, dict(row._mapping), rcpts, items[-1].text)
    return done


def _finish(
    conn: Connection,
    msg: ClaimedMessage,
    rows: list[Any],
    now: datetime,
    schedule: Schedule,
    bounces: dict[int, list[RecipientResult]],
    logs: list[LogEntry],
    done: list[Recorded],
    later: list[dict[str, Any]],
    ended: list[dict[str, Any]],
) -> None:
    r = outbound_recipients
    pending = [x for x in rows if x.state in ("queued", "deferred")]
    if pending:
        when = schedule(msg.created_at, now, msg.attempt)
        if when is not None:
            later.append({"b_id": msg.pk, "b_when": when})
            return
        # Queue time is up: the pending recipients bounce with their last reply.
        delay = (now - msg.created_at).total_seconds()
        for x in pending:
            text = f"5.4.7 gave up after {delay / 3600:.1f} h in the queue; last: " + (
                x.last_reply or "no attempt finished")
            conn.execute(
                update(r).where(r.c.id == x.id).values(
                    state="bounced", last_reply=text, updated_at=now
                )
            )
            res = RecipientResult(
                recipient=ClaimedRecipient(x.id, x.address, x.address.rpartition("@")[2], 0),
                outcome="permanent", stage=x.last_stage, code=x.last_reply_code, text=text,
            )
            bounces.setdefault(msg.pk, []).append(res)
            logs.append(_log_entry(msg, res, "bounced", now, delay))
            done.append(Recorded(msg.queue_id, res, "expired", delay, msg.attempt))
        delivered_all = False
    else:
        delivered_all = all(x.state == "delivered" for x in rows)
    ended.append({"b_id": msg.pk, "b_state": "delivered" if delivered_all else "bounced"})
