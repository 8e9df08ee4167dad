"""Email-to-Case automation: the case-creation gate, auto-responses, owner notifications.

Called by the pipeline's case destination inside its write transaction (see
`mailcase.features.cases.events` for the contract):

- `admit` before a NEW case is created: loop detection (more than `loop_threshold` messages
  with the same sender, subject and body to one routing address within `loop_window` seconds
  create no case for the window), then the daily case limit with its over-limit action.
- `on_refused_sender` when a routing address refused the sender (accept-from list, required
  authentication): the unauthorized-sender action.
- `on_case_email` after an inbound email is stored: the owner notification, then, for a new
  case, the auto-response chosen by the first matching rule.

Every action is one of bounce (a non-delivery notice to the return path, queued with category
"system"), discard (logged and dropped; the raw message stays in the spool table) or requeue
(the pipeline keeps the message and processes it again after `requeue_delay` seconds).

Loop protection is layered: never answer automatic mail or our own addresses (RFC 3834 §2),
at most `auto_response_limit` automatic messages per recipient per `auto_response_period`,
our own mail says `Auto-Submitted: auto-replied` and goes out with an empty return path
(RFC 3834 §3.3), and the acknowledgement's Message-ID is indexed on the case so a reply to it
threads instead of opening a case. Every suppression, loop and limit event is written to the
email log and the maillog.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from mailcase import maillog
from mailcase.config import Settings
from mailcase.errors import StorageError
from mailcase.features.cases.automation.autoresponse import (
    Rule,
    TemplateError,
    check_templates,
    first_match,
    is_daemon_address,
    is_own_address,
    render,
    suppression_reason,
)
from mailcase.features.cases.automation.loops import fingerprint
from mailcase.features.cases.automation.models import (
    auto_response_rules,
    automation_address_settings,
    automation_daily_counts,
    automation_loop_hits,
    automation_sent,
)
from mailcase.features.cases.events import Admission, CaseEmailEvent
from mailcase.features.cases.models import routing_addresses
from mailcase.features.cases.store import emails as email_store
from mailcase.features.cases.store import threads as thread_store
from mailcase.features.cases.threadtoken import with_token_in_body, with_token_in_subject
from mailcase.outbound import dsn
from mailcase.outbound.compose import OutgoingEmail, compose, new_message_id
from mailcase.outbound.queue.enqueue import EnqueueHook, enqueue
from mailcase.storage import messages
from mailcase.storage.db import begin_write
from mailcase.storage.models import receiving_addresses, utcnow
from mailcase.storage.spool import LogEntry
from mailcase.storage.sql import upsert
from mailcase.storage.txmemo import per_transaction

__all__ = [
    "Automation",
    "RuleError",
    "add_rule",
    "address_settings",
    "admit",
    "count_recent_sent",
    "get_rule",
    "list_rules",
    "notify_owner_setting",
    "on_case_email",
    "on_refused_sender",
    "remove_rule",
    "set_notify_owner",
    "update_rule",
]

log = logging.getLogger(__name__)

_RULE_FIELDS = (
    "name",
    "position",
    "enabled",
    "routing_address",
    "sender_domain",
    "subject_contains",
    "from_name",
    "subject_template",
    "text_template",
    "html_template",
)


class RuleError(ValueError):
    """A rule that cannot be saved (bad template, duplicate name, missing field)."""


@dataclass(frozen=True, slots=True)
class Automation:
    """The `CaseAutomation` the composition root gives `CaseDestination`: this module's
    gate and after-store actions, with the enqueue hooks of the process (compliance BCC,
    suppression list) for the mail they send."""

    hooks: Sequence[EnqueueHook] = ()

    def admit(self, conn: Connection, settings: Settings, event: CaseEmailEvent) -> Admission:
        return admit(conn, settings, event, hooks=self.hooks)

    def on_refused_sender(
        self, conn: Connection, settings: Settings, event: CaseEmailEvent, reason: str
    ) -> Admission:
        return on_refused_sender(conn, settings, event, reason, hooks=self.hooks)

    def on_case_email(self, conn: Connection, settings: Settings, event: CaseEmailEvent) -> None:
        on_case_email(conn, settings, event, hooks=self.hooks)


# ------------------------------------------------------------------------------ the gate
def admit(
    conn: Connection,
    settings: Settings,
    event: CaseEmailEvent,
    *,
    now: dt.datetime | None = None,
    hooks: Sequence[EnqueueHook] = (),
) -> Admission:
    """Decide whether this message may open a new case (loop detection, daily limit).

    `now` is for tests (the clock of the loop window and the day of the daily limit).
    """
    cfg = settings.automation
    now = now or utcnow()
    routing = event.routing.address.casefold()
    sender = (event.email.from_address or event.mail_from).casefold()
    body = event.email.text_body or event.email.html_body
    fp = fingerprint(sender, event.email.subject, body)

    window_start = now - dt.timedelta(seconds=cfg.loop_window)
    # Old hits are only housekeeping (the count below reads the window alone): once a batch.
    per_transaction(
        conn,
        "automation.loop_prune",
        lambda: conn.execute(
            delete(automation_loop_hits).where(automation_loop_hits.c.time < window_start)
        ).rowcount,
    )
    conn.execute(
        insert(automation_loop_hits).values(time=now, routing_address=routing, fingerprint=fp)
    )
    seen = conn.execute(
        select(func.count())
        .select_from(automation_loop_hits)
        .where(
            automation_loop_hits.c.routing_address == routing,
            automation_loop_hits.c.fingerprint == fp,
            automation_loop_hits.c.time >= window_start,
        )
    ).scalar_one()
    if seen > cfg.loop_threshold:
        reason = (
            f"mail loop: {seen} messages from <{sender}> with the same subject and body to "
            f"<{routing}> within {cfg.loop_window:g}s (limit {cfg.loop_threshold}); "
            "no case created"
        )
        _log_inbound(conn, now, event, "discarded", reason)
        maillog.automation(event.queue_id, what="loop", sender=sender, to=routing, reason=reason)
        return Admission("discard", reason)

    day = now.date().isoformat()
    if cfg.daily_case_limit:
        created = conn.execute(
            select(automation_daily_counts.c.cases).where(automation_daily_counts.c.day == day)
        ).scalar_one_or_none()
        if created is not None and created >= cfg.daily_case_limit:
            reason = f"daily case limit reached ({cfg.daily_case_limit} cases on {day} UTC)"
            return _act(
                conn, settings, event, cfg.over_limit_action, reason, "over-limit", now, hooks
            )
    _count_case(conn, day)
    return Admission("create")


def on_refused_sender(
    conn: Connection,
    settings: Settings,
    event: CaseEmailEvent,
    reason: str,
    *,
    now: dt.datetime | None = None,
    hooks: Sequence[EnqueueHook] = (),
) -> Admission:
    """The unauthorized-sender action for a sender the routing address refused."""
    why = f"sender not authorized for <{event.routing.address}>: {reason}"
    action = settings.automation.unauthorized_action
    return _act(conn, settings, event, action, why, "unauthorized", now or utcnow(), hooks)


def _act(
    conn: Connection,
    settings: Settings,
    event: CaseEmailEvent,
    action: str,
    reason: str,
    what: str,
    now: dt.datetime,
    hooks: Sequence[EnqueueHook] = (),
) -> Admission:
    """Carry out bounce / discard / requeue for `event`; the returned Admission says which."""
    if action == "requeue":
        delay = settings.automation.requeue_delay
        text = f"{reason}; requeued, processed again in {delay:g}s"
        _log_inbound(conn, now, event, "deferred", text)
        maillog.automation(event.queue_id, what=what, action="requeue", reason=reason)
        return Admission("requeue", text)
    if action == "bounce":
        queued = _send_notice(conn, settings, event, reason, now, hooks)
        text = f"{reason}; non-delivery notice {queued}"
        _log_inbound(conn, now, event, "bounced", text)
        maillog.automation(event.queue_id, what=what, action="bounce", reason=text)
        return Admission("bounce", text)
    text = f"{reason}; discarded (raw message kept)"
    _log_inbound(conn, now, event, "discarded", text)
    maillog.automation(event.queue_id, what=what, action="discard", reason=reason)
    return Admission("discard", text)


def _count_case(conn: Connection, day: str) -> None:
    """One more case on `day` (an upsert: concurrent workers on PostgreSQL count right)."""
    conn.execute(upsert(
        conn, automation_daily_counts, {"day": day, "cases": 1},
        key=[automation_daily_counts.c.day],
        set_={"cases": automation_daily_counts.c.cases + 1},
    ))


def _send_notice(
    conn: Connection,
    settings: Settings,
    event: CaseEmailEvent,
    reason: str,
    now: dt.datetime,
    hooks: Sequence[EnqueueHook],
) -> str:
    """Queue a non-delivery notice to the return path; says what happened (for the log)."""
    rcpt = event.mail_from.strip().strip("<>")
    own, domains = _own(conn, settings)
    why_not = suppression_reason(event.email, event.mail_from, own, domains)
    if why_not:
        _log_outbound(
            conn, now, event, rcpt, "suppressed", f"non-delivery notice suppressed: {why_not}"
        )
        maillog.automation(event.queue_id, what="suppressed", kind="bounce", reason=why_not)
        return f"not sent ({why_not})"
    cfg = settings.automation
    sent = count_recent_sent(conn, rcpt, "bounce", cfg.auto_response_period, now=now)
    if sent >= cfg.auto_response_limit:
        why = f"limit of {cfg.auto_response_limit} per {cfg.auto_response_period:g}s reached"
        _log_outbound(conn, now, event, rcpt, "suppressed",
                      f"non-delivery notice suppressed: {why}")
        maillog.automation(event.queue_id, what="limit", kind="bounce", to=rcpt, reason=why)
        return f"not sent ({why})"
    try:
        content = _build_notice(conn, settings, event, rcpt, reason)
        queue_id = enqueue(
            conn,
            mail_from="",
            rcpt_to=[rcpt],
            content=content,
            category="system",
            source=f"inbound:{event.queue_id}",
            hooks=hooks,
        )
    except ValueError as exc:  # an address the outbound side refuses: log, never quarantine
        _log_outbound(conn, now, event, rcpt, "failed", f"non-delivery notice not sent: {exc}")
        maillog.automation(event.queue_id, what="not-sent", kind="bounce", reason=str(exc))
        return f"not sent ({exc})"
    _record_sent(conn, now, "bounce", rcpt, None, None, queue_id, None)
    return f"queued as {queue_id}"


def _build_notice(
    conn: Connection, settings: Settings, event: CaseEmailEvent, rcpt: str, reason: str
) -> bytes:
    """An RFC 3464 DSN returning the original's headers; a plain notice if it is not stored."""
    raw = _raw(conn, event)
    if raw is not None:
        failure = dsn.DsnFailure(
            recipient=event.routing.address, status="5.7.1", diagnostic=f"550 5.7.1 {reason}"
        )
        return dsn.build_dsn(
            reporting_mta=settings.server.hostname,
            original_sender=rcpt,
            failures=[failure],
            original=raw,
            queue_id=event.queue_id,
        )
    return compose(
        OutgoingEmail(
            from_addr=_system_sender(settings),
            from_name="Mail Delivery System",
            to=(rcpt,),
            subject="Undelivered Mail Returned to Sender",
            text=(
                f"Your message to <{event.routing.address}> was not delivered.\n\n"
                f"Reason: {reason}\n\nSubject: {event.email.subject}\n"
                f"Message-ID: {event.email.message_id or '(none)'}\n"
            ),
            in_reply_to=event.email.message_id,
            auto_submitted="auto-replied",
        )
    )


def _raw(conn: Connection, event: CaseEmailEvent) -> bytes | None:
    """The original message (its headers go back in the DSN), None if it is not stored."""
    try:
        return messages.load_content(conn, event.message_pk)
    except StorageError:
        return None


# ------------------------------------------------------------------------- after storing
def on_case_email(
    conn: Connection,
    settings: Settings,
    event: CaseEmailEvent,
    *,
    now: dt.datetime | None = None,
    hooks: Sequence[EnqueueHook] = (),
) -> None:
    """Owner notification for every inbound case email; an auto-response for a new case.

    `now` is for tests (the clock of the per-sender limit).
    """
    if event.case_id is None:
        return
    now = now or utcnow()
    _notify_owner(conn, settings, event, now, hooks)
    if event.is_new_case:
        _auto_respond(conn, settings, event, now, hooks)


def _auto_respond(
    conn: Connection,
    settings: Settings,
    event: CaseEmailEvent,
    now: dt.datetime,
    hooks: Sequence[EnqueueHook],
) -> None:
    rules = _load_rules(conn)
    if not rules:
        return
    sender = event.mail_from.strip().strip("<>")
    rule = first_match(
        rules, event.routing.address, event.email.from_address or sender, event.email.subject
    )
    if rule is None:
        return
    own, domains = _own(conn, settings)
    why_not = suppression_reason(event.email, event.mail_from, own, domains)
    if why_not:
        _log_outbound(conn, now, event, sender, "suppressed",
                      f"auto-response suppressed: {why_not}")
        maillog.automation(
            event.queue_id,
            what="suppressed",
            kind="auto-reply",
            to=sender or None,
            reason=why_not,
        )
        return
    cfg = settings.automation
    sent = count_recent_sent(conn, sender, "auto-reply", cfg.auto_response_period, now=now)
    if sent >= cfg.auto_response_limit:
        why = (
            f"per-sender limit of {cfg.auto_response_limit} auto-responses per "
            f"{cfg.auto_response_period:g}s reached for <{sender}>"
        )
        _log_outbound(conn, now, event, sender, "suppressed", f"auto-response suppressed: {why}")
        maillog.automation(event.queue_id, what="limit", kind="auto-reply", to=sender, reason=why)
        return
    token = event.thread_token or ""
    variables = {
        "case_number": event.case_number or "",
        "subject": event.case_subject or event.email.subject,
        "contact_name": event.contact_name,
        "contact_email": event.contact_email,
        "thread_token": token,
        "routing_address": event.routing.address,
        "routing_name": event.routing.name,
    }
    try:
        out = render(rule.subject_template, rule.text_template, rule.html_template, variables)
    except TemplateError as exc:
        why = f"rule {rule.name!r}: {exc}"
        _log_outbound(conn, now, event, sender, "failed", f"auto-response not sent: {why}")
        maillog.automation(event.queue_id, what="template-error", rule=rule.name, reason=str(exc))
        return
    subject, text, html = out.subject, out.text, out.html
    if token:
        subject = with_token_in_subject(subject, token)
        text = with_token_in_body(text, token)
        if html is not None and token.lower() not in html.lower():
            html = f"{html}\n<p>[ {token} ]</p>\n"
    domain = event.routing.address.rpartition("@")[2] or settings.server.hostname
    message_id = new_message_id(domain)
    references = tuple(event.email.references)
    try:
        content = compose(
            OutgoingEmail(
                from_addr=event.routing.address,
                from_name=rule.from_name or event.routing.name,
                to=(sender,),
                subject=subject,
                text=text,
                html=html,
                message_id=message_id,
                in_reply_to=event.email.message_id,
                references=references,
                auto_submitted="auto-replied",
                extra_headers=(("X-Mailcase-Case", event.case_number or ""),),
            )
        )
        # RFC 3834 §3.3: an auto-response goes out with an empty return path.
        queue_id = enqueue(
            conn,
            mail_from="",
            rcpt_to=[sender],
            content=content,
            category="auto",
            source=f"case:{event.case_number}",
            message_id=message_id,
            hooks=hooks,
        )
    except ValueError as exc:  # an address compose or the queue refuses: the case stays
        _log_outbound(conn, now, event, sender, "failed", f"auto-response not sent: {exc}")
        maillog.automation(event.queue_id, what="not-sent", kind="auto-reply", reason=str(exc))
        return
    refs = [*references, event.email.message_id] if event.email.message_id else list(references)
    email_id = email_store.add_email(
        conn,
        event.case_id,  # type: ignore[arg-type]  # checked in on_case_email
        direction="outbound",
        from_address=event.routing.address,
        from_name=rule.from_name or event.routing.name,
        to_addresses=[sender],
        cc_addresses=[],
        subject=subject,
        text_body=text,
        html_body=html or "",
        message_id=message_id,
        in_reply_to=event.email.message_id,
        reference_ids=refs,
        outbound_queue_id=queue_id,
        routing_address=event.routing.address,
    )
    thread_store.index_message_ids(conn, event.case_id, email_id, [message_id])  # type: ignore[arg-type]
    _record_sent(conn, now, "auto-reply", sender, event.case_id, rule.id, queue_id, message_id)
    maillog.automation(
        event.queue_id,
        what="auto-reply",
        rule=rule.name,
        to=sender,
        case=event.case_number,
        outbound=queue_id,
        message_id=message_id,
    )


def _notify_owner(
    conn: Connection,
    settings: Settings,
    event: CaseEmailEvent,
    now: dt.datetime,
    hooks: Sequence[EnqueueHook],
) -> None:
    if not notify_owner_setting(conn, settings, event.routing.address):
        return
    owner = (event.owner or event.routing.owner or "").strip()
    if "@" not in owner:
        if owner:
            maillog.automation(
                event.queue_id,
                what="notify-skipped",
                owner=owner,
                reason="owner has no email address",
            )
        return
    own, domains = _own(conn, settings)
    if is_own_address(owner, own, ()) or is_daemon_address(owner):
        maillog.automation(
            event.queue_id,
            what="notify-skipped",
            owner=owner,
            reason="owner address is one of our own receiving addresses (would loop)",
        )
        return
    number = event.case_number or ""
    what = "New case" if event.is_new_case else "New email on case"
    sender = event.email.from_address or event.mail_from or "(empty return path)"
    excerpt = event.email.text_body[:2000]
    lines = [
        f"{what} {number} via <{event.routing.address}>.",
        "",
        f"From: {event.email.from_name} <{sender}>".replace(" <", " <", 1),
        f"Subject: {event.email.subject}",
    ]
    if event.sender_not_on_thread:
        lines.append("Note: the sender is not on this case's thread.")
    if event.email.auto_submitted:
        lines.append("Note: this email looks automatic (auto-reply, list or report).")
    lines += ["", excerpt]
    try:
        content = compose(
            OutgoingEmail(
                from_addr=_system_sender(settings),
                from_name="mailcase",
                to=(owner,),
                subject=f"[Case {number}] {what}: {event.email.subject}",
                text="\n".join(lines),
                auto_submitted="auto-generated",
                extra_headers=(("X-Mailcase-Case", number),),
            )
        )
        queue_id = enqueue(
            conn,
            mail_from=_system_sender(settings),
            rcpt_to=[owner],
            content=content,
            category="system",
            source=f"case:{number}",
            hooks=hooks,
        )
    except ValueError as exc:  # a mistyped owner address must not stop the case
        maillog.automation(event.queue_id, what="notify-skipped", owner=owner, reason=str(exc))
        return
    _record_sent(conn, now, "notification", owner, event.case_id, None, queue_id, None)
    maillog.automation(
        event.queue_id, what="notify-owner", to=owner, case=number, outbound=queue_id
    )


# ------------------------------------------------------------------------------ helpers
def _system_sender(settings: Settings) -> str:
    return settings.automation.sender_address or f"mailcase@{settings.server.hostname}"


def _own(conn: Connection, settings: Settings) -> tuple[frozenset[str], tuple[str, ...]]:
    """Our own addresses (receiving and routing) and host names, for never-respond checks."""
    key = ("automation.own", id(settings))
    return per_transaction(conn, key, lambda: _read_own(conn, settings))


def _read_own(conn: Connection, settings: Settings) -> tuple[frozenset[str], tuple[str, ...]]:
    addrs = {
        str(a).casefold() for a in conn.execute(select(receiving_addresses.c.address)).scalars()
    }
    addrs |= {
        str(a).casefold() for a in conn.execute(select(routing_addresses.c.address)).scalars()
    }
    addrs.add(_system_sender(settings).casefold())
    return frozenset(addrs), (settings.server.hostname,)


def count_recent_sent(
    conn: Connection, recipient: str, kind: str, period: float, *, now: dt.datetime | None = None
) -> int:
    """How many automatic messages of `kind` went to `recipient` in the last `period` seconds."""
    since = (now or utcnow()) - dt.timedelta(seconds=period)
    return int(
        conn.execute(
            select(func.count())
            .select_from(automation_sent)
            .where(
                automation_sent.c.recipient == recipient.casefold(),
                automation_sent.c.kind == kind,
                automation_sent.c.time >= since,
            )
        ).scalar_one()
    )


def _record_sent(
    conn: Connection,
    now: dt.datetime,
    kind: str,
    recipient: str,
    case_id: int | None,
    rule_id: int | None,
    queue_id: str | None,
    message_id: str | None,
) -> None:
    conn.execute(
        insert(automation_sent).values(
            time=now,
            kind=kind,
            recipient=recipient.casefold(),
            case_id=case_id,
            rule_id=rule_id,
            outbound_queue_id=queue_id,
            message_id=message_id,
        )
    )


def _log_inbound(
    conn: Connection, now: dt.datetime, event: CaseEmailEvent, outcome: str, reason: str
) -> None:
    messages.insert_log(
        conn,
        LogEntry(
            time=now,
            direction="inbound",
            queue_id=event.queue_id,
            mail_from=event.mail_from,
            rcpt_to=tuple(event.rcpt_to),
            message_id=event.email.message_id,
            outcome=outcome,
            reason=reason,
        ),
    )


def _log_outbound(
    conn: Connection, now: dt.datetime, event: CaseEmailEvent, rcpt: str, outcome: str, reason: str
) -> None:
    messages.insert_log(
        conn,
        LogEntry(
            time=now,
            direction="outbound",
            queue_id=event.queue_id,
            mail_from=event.routing.address,
            rcpt_to=(rcpt,) if rcpt else (),
            message_id=event.email.message_id,
            outcome=outcome,
            reason=reason,
        ),
    )


# ------------------------------------------------------------------------ rules (CRUD)
def _rule(row: Any) -> Rule:
    return Rule(
        id=row.id,
        name=row.name,
        position=row.position,
        enabled=bool(row.enabled),
        routing_address=row.routing_address,
        sender_domain=row.sender_domain,
        subject_contains=row.subject_contains,
        from_name=row.from_name,
        subject_template=row.subject_template,
        text_template=row.text_template,
        html_template=row.html_template,
    )


def _load_rules(conn: Connection) -> list[Rule]:
    return per_transaction(conn, "automation.rules", lambda: _read_rules(conn))


def _read_rules(conn: Connection) -> list[Rule]:
    rows = conn.execute(
        select(auto_response_rules)
        .where(auto_response_rules.c.enabled.is_(True))
        .order_by(auto_response_rules.c.position, auto_response_rules.c.id)
    )
    return [_rule(r) for r in rows]


def list_rules(engine: Engine) -> list[Rule]:
    """All rules in evaluation order (disabled ones too)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(auto_response_rules).order_by(
                auto_response_rules.c.position, auto_response_rules.c.id
            )
        )
        return [_rule(r) for r in rows]


def get_rule(engine: Engine, key: int | str) -> Rule | None:
    """One rule by id (int or digits) or name."""
    with engine.connect() as conn:
        return _get_rule(conn, key)


def _get_rule(conn: Connection, key: int | str) -> Rule | None:
    col = auto_response_rules.c
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        row = conn.execute(select(auto_response_rules).where(col.id == int(key))).first()
        if row is not None:
            return _rule(row)
        if isinstance(key, int):
            return None
    row = conn.execute(select(auto_response_rules).where(col.name == str(key))).first()
    return _rule(row) if row is not None else None


def _clean_rule_values(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        if k not in _RULE_FIELDS:
            raise RuleError(f"unknown rule field {k!r}")
        if isinstance(v, str) and k in ("routing_address", "sender_domain", "subject_contains"):
            v = v.strip() or None
            if v is not None and k != "subject_contains":
                v = v.casefold().lstrip("@") if k == "sender_domain" else v.casefold()
        out[k] = v
    if "name" in out:
        name = str(out["name"] or "").strip()
        if not name or len(name) > 200 or any(c in name for c in "\r\n\x00"):
            raise RuleError("a rule needs a one-line name of at most 200 characters")
        out["name"] = name
    if "routing_address" in out and out["routing_address"] and "@" not in out["routing_address"]:
        raise RuleError(f"routing address {out['routing_address']!r} is not an email address")
    return out


def add_rule(
    engine: Engine,
    *,
    name: str,
    subject_template: str,
    text_template: str,
    html_template: str | None = None,
    position: int | None = None,
    enabled: bool = True,
    routing_address: str | None = None,
    sender_domain: str | None = None,
    subject_contains: str | None = None,
    from_name: str = "",
) -> Rule:
    """Save a new rule after checking its templates in the sandbox; raises RuleError."""
    values = _clean_rule_values(
        {
            "name": name,
            "enabled": enabled,
            "routing_address": routing_address,
            "sender_domain": sender_domain,
            "subject_contains": subject_contains,
            "from_name": (from_name or "").strip(),
            "subject_template": subject_template,
            "text_template": text_template,
            "html_template": html_template or None,
        }
    )
    _check(values["subject_template"], values["text_template"], values["html_template"])
    now = utcnow()
    with begin_write(engine) as conn:
        if position is None:
            top = conn.execute(select(func.max(auto_response_rules.c.position))).scalar_one()
            position = (int(top) + 10) if top is not None else 10
        try:
            new_id = conn.execute(
                insert(auto_response_rules)
                .values(position=position, created_at=now, updated_at=now, **values)
                .returning(auto_response_rules.c.id)
            ).scalar_one()
        except IntegrityError:
            raise RuleError(f"a rule named {values['name']!r} already exists") from None
        rule = _get_rule(conn, int(new_id))
    assert rule is not None
    return rule


def update_rule(engine: Engine, key: int | str, **changes: Any) -> Rule | None:
    """Change fields of a rule (templates checked again); None if there is no such rule."""
    values = _clean_rule_values(changes)
    with begin_write(engine) as conn:
        current = _get_rule(conn, key)
        if current is None:
            return None
        merged = {
            "subject_template": current.subject_template,
            "text_template": current.text_template,
            "html_template": current.html_template,
        }
        merged.update({k: v for k, v in values.items() if k in merged})
        if "html_template" in values and not values["html_template"]:
            merged["html_template"] = values["html_template"] = None
        _check(
            str(merged["subject_template"] or ""),
            str(merged["text_template"] or ""),
            merged["html_template"],
        )
        if values:
            try:
                conn.execute(
                    update(auto_response_rules)
                    .where(auto_response_rules.c.id == current.id)
                    .values(updated_at=utcnow(), **values)
                )
            except IntegrityError:
                raise RuleError(f"a rule named {values.get('name')!r} already exists") from None
        return _get_rule(conn, current.id)


def remove_rule(engine: Engine, key: int | str) -> bool:
    """Delete a rule; False if there is none."""
    with begin_write(engine) as conn:
        current = _get_rule(conn, key)
        if current is None:
            return False
        conn.execute(delete(auto_response_rules).where(auto_response_rules.c.id == current.id))
        return True


def _check(subject: str, text: str, html: str | None) -> None:
    try:
        check_templates(subject, text, html)
    except TemplateError as exc:
        raise RuleError(str(exc)) from exc


# --------------------------------------------------------------- per-address settings
def notify_owner_setting(conn: Connection, settings: Settings, address: str) -> bool:
    """Whether the owner is notified for mail to `address` (its own switch, else global)."""
    switches = per_transaction(conn, "automation.notify_owner", lambda: _read_switches(conn))
    value = switches.get(address.casefold())
    return settings.automation.notify_owner if value is None else value


def _read_switches(conn: Connection) -> dict[str, bool | None]:
    rows = conn.execute(
        select(automation_address_settings.c.address, automation_address_settings.c.notify_owner)
    )
    return {str(a): None if n is None else bool(n) for a, n in rows}


def set_notify_owner(engine: Engine, address: str, value: bool | None) -> None:
    """Set (True/False) or clear (None: use the global setting) an address's switch.

    Only a routing address has case owners to notify: setting the switch of any other address
    raises `RuleError` (it would be stored and never used). Clearing works for any address,
    so a switch left behind by a removed routing address can go."""
    addr = address.strip().casefold()
    with begin_write(engine) as conn:
        if value is not None and conn.execute(
            select(routing_addresses.c.id).where(func.lower(routing_addresses.c.address) == addr)
        ).first() is None:
            raise RuleError(
                f"{addr} is not a routing address: only mail to a routing address makes cases "
                "with owners to notify; see `mailcase routing list` (or `mailcase routing add "
                f"{addr}`)"
            )
        if value is None:  # its only switch back to the global setting: no row needed
            conn.execute(delete(automation_address_settings)
                         .where(automation_address_settings.c.address == addr))
            return
        n = conn.execute(
            update(automation_address_settings)
            .where(automation_address_settings.c.address == addr)
            .values(notify_owner=value, updated_at=utcnow())
        ).rowcount
        if not n:
            conn.execute(
                insert(automation_address_settings).values(
                    address=addr, notify_owner=value, updated_at=utcnow()
                )
            )


def address_settings(engine: Engine) -> list[tuple[str, bool | None]]:
    """Every per-address switch (address, notify_owner)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                automation_address_settings.c.address, automation_address_settings.c.notify_owner
            ).order_by(automation_address_settings.c.address)
        )
        return [(str(a), None if n is None else bool(n)) for a, n in rows]
