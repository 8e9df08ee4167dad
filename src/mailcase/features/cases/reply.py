"""Replies on a case: compose, sign the thread, queue for delivery, remember the Message-ID.

A reply carries the case's thread token in its subject (``Re: … [ thread::…:: ]``) and at the
end of its body, and a Message-ID we generate and index on the case, so that the customer's
answer threads by In-Reply-To/References, or by the token when a client dropped those.
The reply, its case email row and its outbound queue entry commit in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select

from mailcase.config import Settings
from mailcase.features.cases.models import case_emails, cases, contacts, routing_addresses
from mailcase.features.cases.store import cases as case_store
from mailcase.features.cases.store import emails as email_store
from mailcase.features.cases.store import threads as thread_store
from mailcase.features.cases.threadtoken import (
    make_token,
    strip_tokens,
    with_token_in_body,
    with_token_in_subject,
)
from mailcase.outbound.queue.enqueue import EnqueueHook
from mailcase.secrets import server_secret
from mailcase.storage.db import begin_write

__all__ = ["ReplyError", "ReplyResult", "reply_subject", "send_reply"]

_e = case_emails
_c = cases
_MAX_REFERENCES = 20


class ReplyError(ValueError):
    """The reply cannot be sent as asked (no such case, no recipient, no sender address)."""


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """What was queued."""

    case_number: str
    case_email_id: int
    outbound_queue_id: str
    message_id: str
    to: tuple[str, ...]
    subject: str


def reply_subject(case_subject: str, token: str) -> str:
    """``Re: <subject> [ token ]`` (one "Re:", whatever the subject had)."""
    base = strip_tokens(case_subject)
    if not base.lower().startswith(("re:", "aw:")):
        base = f"Re: {base}" if base else "Re:"
    return with_token_in_subject(base, token)


def send_reply(
    engine: Engine,
    settings: Settings,
    number: int | str,
    *,
    body: str,
    html: str | None = None,
    to: Sequence[str] = (),
    cc: Sequence[str] = (),
    from_address: str | None = None,
    from_name: str = "",
    hooks: Sequence[EnqueueHook] = (),
) -> ReplyResult:
    """Queue a reply on case `number`; ReplyError when it cannot be sent. `hooks`: the
    process's enqueue hooks (`mailcase.platform.build_outbound`)."""
    from mailcase.outbound.compose import OutgoingEmail, compose, new_message_id
    from mailcase.outbound.queue.enqueue import EnqueueError, enqueue

    if not body.strip() and not (html or "").strip():
        raise ReplyError("a reply needs a body")
    n = case_store.parse_number(number)
    secret = server_secret(settings)
    domain = settings.cases.message_id_domain or settings.server.hostname
    with begin_write(engine) as conn:
        row = conn.execute(
            select(
                _c.c.id,
                _c.c.subject,
                _c.c.supplied_email,
                contacts.c.email,
                routing_addresses.c.address,
                routing_addresses.c.name,
            )
            .select_from(
                _c.outerjoin(contacts, contacts.c.id == _c.c.contact_id).outerjoin(
                    routing_addresses, routing_addresses.c.id == _c.c.routing_address_id
                )
            )
            .where(_c.c.number == n)
        ).first()
        if row is None:
            raise ReplyError(f"no case {case_store.format_number(n)}")
        case_id, subject, supplied, contact_email, routing_address, routing_name = row
        last = conn.execute(
            select(_e.c.direction, _e.c.from_address, _e.c.message_id, _e.c.reference_ids)
            .where(_e.c.case_id == case_id)
            .order_by(_e.c.id.desc())
            .limit(1)
        ).first()
        last_in = conn.execute(
            select(_e.c.from_address)
            .where(_e.c.case_id == case_id, _e.c.direction == "inbound")
            .order_by(_e.c.id.desc())
            .limit(1)
        ).scalar()
        recipients = tuple(to) or tuple(a for a in [last_in or contact_email or supplied] if a)
        if not recipients:
            raise ReplyError(
                f"case {case_store.format_number(n)} has no address to reply to; give --to"
            )
        sender = from_address or routing_address
        if not sender:
            raise ReplyError("the case has no routing address to send from; give a from address")
        token = make_token(secret, int(case_id))
        message_id = new_message_id(domain)
        in_reply_to = last[2] if last is not None else None
        references: list[str] = list(last[3] or []) if last is not None else []
        if in_reply_to and in_reply_to not in references:
            references.append(in_reply_to)
        references = references[-_MAX_REFERENCES:]
        out_subject = reply_subject(str(subject), token)
        text = with_token_in_body(body, token)
        email = OutgoingEmail(
            from_addr=sender,
            from_name=from_name or (routing_name if routing_name != sender else "") or "",
            to=recipients,
            cc=tuple(cc),
            subject=out_subject,
            text=text,
            html=html,
            message_id=message_id,
            in_reply_to=in_reply_to,
            references=tuple(references),
        )
        try:
            content = compose(email)
            queue_id = enqueue(
                conn,
                mail_from=sender,
                rcpt_to=[*recipients, *cc],
                content=content,
                category="user",
                source=f"case:{case_store.format_number(n)}",
                message_id=message_id,
                hooks=hooks,
            )
        except (ValueError, EnqueueError) as e:
            raise ReplyError(str(e)) from None
        email_id = email_store.add_email(
            conn,
            int(case_id),
            direction="outbound",
            from_address=sender,
            from_name=email.from_name,
            to_addresses=[{"address": a, "name": ""} for a in recipients],
            cc_addresses=[{"address": a, "name": ""} for a in cc],
            subject=out_subject,
            text_body=text,
            html_body=html or "",
            message_id=message_id,
            in_reply_to=in_reply_to,
            reference_ids=references,
            outbound_queue_id=queue_id,
        )
        thread_store.index_message_ids(conn, int(case_id), email_id, [message_id])
    return ReplyResult(
        case_store.format_number(n), email_id, queue_id, message_id, recipients, out_subject
    )
