"""The durable outbound queue: `enqueue` inside the caller's transaction, and its read side.

Everything mailcase sends goes through `enqueue`; the delivery engine
(`mailcase.delivery.engine`) takes it from there. Enqueuing in the caller's transaction means
the message exists exactly when the caller's own change does (a case reply and its outgoing
mail commit together or not at all).

Hooks for other parts of mailcase (documented here because they are the contract):

- `EnqueueHook`: ``hook(conn, envelope) -> envelope``, passed to `enqueue` as ``hooks=`` and run
  in order inside the same transaction, after validation. They may add recipients (compliance
  BCC), or list addresses in ``envelope.suppressed`` (known hard bounces): those recipients are
  stored with state "suppressed" and never sent to. Added addresses are validated too. Callers
  get them from the composition root (`mailcase.platform.build_outbound`), never from an
  import side effect: what a process enqueues must not depend on what it happened to import.
- The delivery engine takes `mailcase.delivery.hooks.DeliveryHooks` (DKIM signing, VERP return
  path, DSN on permanent failure), built at the same place.

Content is normalised on the way in: a bare CR or LF becomes CRLF (the SMTP smuggling class of
problems starts with them), and the message ends with CRLF. Dot-stuffing happens on the wire.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

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
from mailcase.smtp.address import AddressError, parse_mailbox
from mailcase.storage._records import LogEntry, log_row
from mailcase.storage.db import begin_write
from mailcase.storage.models import email_log, utcnow

__all__ = [
    "PASSWORD_RESET_SOURCE",
    "ClaimedMessage",
    "ClaimedRecipient",
    "Completion",
    "EnqueueError",
    "EnqueueHook",
    "Envelope",
    "OnBounce",
    "RecipientResult",
    "Recorded",
    "Schedule",
    "allowed_categories",
    "claim",
    "enqueue",
    "list_messages",
    "new_outbound_queue_id",
    "normalize_content",
    "queue_counts",
    "record",
    "recover_inflight",
    "release_held",
    "retry_now",
    "show_message",
]

# Longest Message-ID kept (the column is indexed; a PostgreSQL btree entry must stay small).
_MESSAGE_ID_MAX = 500


class EnqueueError(ValueError):
    """The message cannot be queued as given (bad address, no recipient, bad category)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """What `enqueue` is about to store; what its `EnqueueHook`s see and may change."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    content: bytes
    category: str
    source: str | None
    message_id: str | None
    suppressed: frozenset[str] = frozenset()


class EnqueueHook(Protocol):
    """Run by `enqueue` in the caller's transaction; returns the envelope to store."""

    def __call__(self, conn: Connection, env: Envelope, /) -> Envelope: ...

_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_HEADER_END = re.compile(rb"\r\n\r\n")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*(?:\r\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def new_outbound_queue_id() -> str:
    """18 hex digits: seconds since the epoch then 40 random bits (sortable, unique)."""
    return f"{int(time.time()):08X}{secrets.randbits(40):010X}"


def normalize_content(content: bytes) -> bytes:
    """Bare CR and bare LF become CRLF; the message ends with CRLF."""
    out = _BARE.sub(b"\r\n", bytes(content))
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


def _header_message_id(content: bytes) -> str | None:
    m = _HEADER_END.search(content)
    head = content if m is None else content[: m.start() + 2]
    found = _MESSAGE_ID.search(head)
    if found is None:
        return None
    value = found.group(1).replace(b"\r\n", b"").strip().decode("utf-8", "replace")
    return value or None


def _mailbox(address: str, what: str) -> str:
    try:
        return parse_mailbox(address.strip())
    except AddressError as e:
        raise EnqueueError(f"{what} {address!r}: {e.reply.text}") from None


def _validated(env: Envelope) -> Envelope:
    if env.category not in CATEGORIES:
        raise EnqueueError(
            f"category {env.category!r} is not one of {', '.join(CATEGORIES)}"
        )
    mail_from = "" if env.mail_from.strip() in ("", "<>") else _mailbox(env.mail_from, "sender")
    rcpts: list[str] = []
    seen: set[str] = set()
    for r in env.rcpt_to:
        addr = _mailbox(r, "recipient")
        if addr.lower() not in seen:
            seen.add(addr.lower())
            rcpts.append(addr)
    if not rcpts:
        raise EnqueueError("a message needs at least one recipient")
    message_id = env.message_id
    if message_id is not None:
        message_id = message_id.replace("\r", " ").replace("\n", " ").strip()[:_MESSAGE_ID_MAX]
    return replace(env, mail_from=mail_from, rcpt_to=tuple(rcpts), message_id=message_id)


def enqueue(
    conn: Connection,
    *,
    mail_from: str,
    rcpt_to: Sequence[str],
    content: bytes,
    category: str = "user",
    source: str | None = None,
    message_id: str | None = None,
    hooks: Sequence[EnqueueHook] = (),
) -> str:
    """Queue one message for delivery in `conn`'s transaction; returns its queue id.

    `mail_from` is the envelope sender ("" for the null sender of a DSN); `content` the full
    RFC 5322 message. `category` is "system" (password-reset class), "auto" or "user" and
    decides what the Deliverability access level lets out. `source` links back to what caused
    the mail (e.g. "case:00001027"). `message_id` defaults to the content's Message-ID header.
    Raises `EnqueueError` (a ValueError) for a bad address, no recipient or a bad category.
    `hooks` (compliance BCC, suppression list) come from `mailcase.platform.build_outbound`.
    The caller wakes the engine after its commit (`ApiContext.on_outbound_queued`); without it
    the engine still finds the message on its next poll.
    """
    body = normalize_content(content)
    env = _validated(
        Envelope(
            mail_from=mail_from,
            rcpt_to=tuple(rcpt_to),
            content=body,
            category=category,
            source=source,
            message_id=message_id if message_id is not None else _header_message_id(body),
        )
    )
    for hook in hooks:
        env = _validated(hook(conn, env))
    if env.content is not body:
        env = replace(env, content=normalize_content(env.content))
    return _store(conn, env)


def _store(conn: Connection, env: Envelope) -> str:
    now = utcnow()
    queue_id = new_outbound_queue_id()
    suppressed = {s.lower() for s in env.suppressed}
    all_suppressed = all(r.lower() in suppressed for r in env.rcpt_to)
    result = conn.execute(
        insert(outbound_messages).values(
            queue_id=queue_id,
            created_at=now,
            mail_from=env.mail_from,
            message_id=env.message_id,
            category=env.category,
            source=env.source,
            size=len(env.content),
            state="bounced" if all_suppressed else "queued",
            next_attempt_at=now,
            attempts=0,
            finished_at=now if all_suppressed else None,
        )
    )
    assert result.inserted_primary_key is not None
    pk = result.inserted_primary_key[0]
    conn.execute(insert(outbound_contents).values(message_pk=pk, content=env.content))
    rows: list[dict[str, Any]] = []
    for r in env.rcpt_to:
        gone = r.lower() in suppressed
        rows.append(
            {
                "message_pk": pk,
                "address": r,
                "domain": r.rpartition("@")[2].lower(),
                "state": "suppressed" if gone else "queued",
                "attempts": 0,
                "last_stage": None,
                "last_reply_code": None,
                "last_reply": "suppressed: address known to bounce" if gone else None,
                "updated_at": now if gone else None,
            }
        )
    conn.execute(insert(outbound_recipients), rows)
    return queue_id



# -- the engine's side: claim, record, and what people look at -------------------------------

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
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True, of=m)
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


def _log_entry(msg: ClaimedMessage, res: RecipientResult, outcome: str, now: datetime,
               delay: float) -> LogEntry:
    reason = [f"attempt={msg.attempt}", f"delay={delay:.1f}s"]
    if res.relay:
        reason.append(f"relay={res.relay}")
    if res.remote_host:
        reason.append(f"host={res.remote_host}[{res.remote_ip}]:{res.remote_port}")
    if res.tls_version:
        how = f"verified({res.verified_by})" if res.tls_verified else "not-verified"
        reason.append(f"tls={res.tls_version}:{res.tls_cipher} {how}")
    elif res.remote_host and res.stage not in ("connect",):
        reason.append("tls=plaintext")
    if res.tls_mode:
        reason.append(f"tls_mode={res.tls_mode}")
    if outcome != "delivered" and res.stage:
        reason.append(f"stage={res.stage}")
    return LogEntry(
        time=now, direction="outbound", queue_id=msg.queue_id, client_ip=res.remote_ip,
        helo=res.remote_host, mail_from=msg.mail_from, rcpt_to=(res.recipient.address,),
        tls_version=res.tls_version, tls_cipher=res.tls_cipher, size=msg.size,
        message_id=msg.message_id, outcome=outcome, reply_code=res.code,
        reply_text=res.text or None, reason=" ".join(reason),
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
                "reply_text": res.text or None,
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
