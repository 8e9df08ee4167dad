"""The durable outbound queue's way in: `enqueue` inside the caller's transaction.

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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    insert,
)

from mailcase.outbound.models import (
    CATEGORIES,
    outbound_contents,
    outbound_messages,
    outbound_recipients,
)
from mailcase.smtp.address import AddressError, parse_mailbox
from mailcase.storage.models import utcnow

__all__ = [
    "EnqueueError",
    "EnqueueHook",
    "Envelope",
    "enqueue",
    "new_outbound_queue_id",
    "normalize_content",
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
