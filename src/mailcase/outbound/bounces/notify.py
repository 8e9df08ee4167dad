"""DSNs we send: the delivery engine's `on_permanent_failure` hook.

A permanent failure is told to the sender (RFC 3464 DSN), never to an empty return path and
never about a DSN, and a 5xx refusal is recorded as a hard bounce of that recipient.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from mailcase import maillog
from mailcase.config import Settings
from mailcase.outbound.bounces.hook import compliance_recipients, enqueue_hook
from mailcase.outbound.bounces.suppression import record_bounce
from mailcase.outbound.dsn import DsnFailure, build_dsn
from mailcase.outbound.models import outbound_contents
from mailcase.outbound.queue import enqueue as queue_enqueue
from mailcase.policy.recipients import VERP_PREFIX
from mailcase.storage.models import utcnow

__all__ = [
    "on_permanent_failure",
]

log = logging.getLogger(__name__)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    mapping = getattr(obj, "_mapping", None)
    if mapping is not None and name in mapping:
        return mapping[name]
    return getattr(obj, name, default)


def _reply_parts(reply: Any) -> tuple[int | None, str | None, str | None]:
    """(code, enhanced status, text) of whatever reply value the engine passes."""
    if reply is None:
        return None, None, None
    if isinstance(reply, str):
        return None, None, reply
    code = _get(reply, "code")
    enhanced = _get(reply, "enhanced")
    text = _get(reply, "text") or _get(reply, "message")
    if text is None:
        text = str(reply)
    return (int(code) if isinstance(code, int) else None), enhanced, str(text)


def _status_of(code: int | None, enhanced: str | None, text: str | None) -> str:
    """RFC 3463 status of a failure: the remote's enhanced code when it gave one (a 4.x.x
    stays 4.x.x: a persistent transient failure that ran out of time), else from the code."""
    if enhanced and re.fullmatch(r"[45]\.\d{1,3}\.\d{1,3}", enhanced):
        return enhanced
    if text:
        m = re.search(r"\b([45])\.(\d{1,3})\.(\d{1,3})\b", text)
        if m:
            return m.group(0)
    if code is not None and 400 <= code < 500:
        return "4.0.0"
    if code is None and text and "expired" in text.lower():
        return "4.4.7"  # RFC 3463: delivery time expired
    return "5.0.0"


def _is_dsn(content: bytes) -> bool:
    head = content.split(b"\r\n\r\n", 1)[0].lower()
    return b"multipart/report" in head and b"delivery-status" in head


def on_permanent_failure(
    conn: Connection, settings: Settings, message_row: Any, recipients: Sequence[Any], reply: Any
) -> None:
    """Tell the sender (RFC 3464 DSN, category "system", empty return path) and record the
    bounces. No DSN to the null sender, to one of our bounce addresses, or about a DSN.

    Never raises: it runs in the transaction that records the delivery results, which must
    commit whatever happens here (a savepoint undoes a half-done DSN; the failure is logged)."""
    try:
        with conn.begin_nested():
            _on_permanent_failure(conn, settings, message_row, recipients, reply)
    except Exception as e:  # noqa: BLE001 - the delivery results must still be recorded
        queue_id = str(_get(message_row, "queue_id", "") or "") or None
        log.warning("bounce handling of %s failed: %s: %s", queue_id, type(e).__name__, e)
        maillog.event("bounce", queue_id, dsn="failed", error=f"{type(e).__name__}: {e}")


def _on_permanent_failure(
    conn: Connection, settings: Settings, message_row: Any, recipients: Sequence[Any], reply: Any
) -> None:
    queue_id = str(_get(message_row, "queue_id", "") or "")
    mail_from = str(_get(message_row, "mail_from", "") or "").strip()
    message_pk = _get(message_row, "id")
    content = _get(message_row, "content")
    if content is None and message_pk is not None:
        content = conn.execute(
            select(outbound_contents.c.content).where(outbound_contents.c.message_pk == message_pk)
        ).scalar()
    content = bytes(content or b"")
    message_id = _get(message_row, "message_id")
    failures: list[DsnFailure] = []
    # RFC 5321 §6.1 / RFC 3461 §6.2: a message with a null reverse-path (a DSN) gets no
    # notification, and its failure says nothing about the address it went to (our own
    # sender, whom a DSN informs): it never suppresses. The same for a report or notice of
    # ours sent with a sender.
    null_sender = mail_from in ("", "<>")
    ours = mail_from.lower().startswith(VERP_PREFIX) or mail_from.lower().startswith(
        "mailer-daemon@"
    )
    bounce_of_bounce = null_sender or ours or _is_dsn(content)
    archive = {a.lower() for a in compliance_recipients(settings)}
    for r in recipients:
        address = r if isinstance(r, str) else str(_get(r, "address", "") or "")
        if not address:
            continue
        if address.lower() in archive:
            # The compliance copy failed: the operator must see it (email log, maillog), the
            # sender must not (a DSN would reveal the silent BCC), and it is not suppressed.
            maillog.event("bounce", queue_id or None, to=f"<{address}>", compliance="failed",
                          dsn="not sent")
            continue
        code, enhanced, text = _reply_parts(reply)
        if not isinstance(r, str):
            # The engine's per-recipient dicts (address, stage, code, reply), or table rows.
            for code_key, text_key in (("code", "reply"), ("last_reply_code", "last_reply")):
                if _get(r, text_key) is not None or _get(r, code_key) is not None:
                    rcode, rtext = _get(r, code_key), _get(r, text_key)
                    code = rcode if isinstance(rcode, int) else None
                    text, enhanced = (None if rtext is None else str(rtext)), None
                    break
        status = _status_of(code, enhanced, text)
        diagnostic = text if text is None or code is None or text.startswith(str(code)) else (
            f"{code} {text}"
        )
        failures.append(DsnFailure(recipient=address, status=status, diagnostic=diagnostic,
                                   remote_mta=_get(r, "remote_host") if not isinstance(r, str)
                                   else None, last_attempt=utcnow()))
        if code is not None and 500 <= code < 600:
            # The remote refused it permanently: a hard bounce of that address.
            record_bounce(conn, source=f"delivery:{queue_id}", recipient=address,
                          status=status, outbound_queue_id=queue_id or None,
                          message_id=message_id, diagnostic=diagnostic, mail_from=mail_from,
                          keep="the failed message was itself a bounce" if bounce_of_bounce
                          else None)
    if not failures:
        return
    if bounce_of_bounce:
        maillog.event("bounce", queue_id or None, dsn="not sent",
                      reason="null sender" if null_sender else "message is itself a bounce")
        return
    try:
        with conn.begin_nested():  # a DSN that cannot be queued must not undo the bounces
            dsn = build_dsn(
                reporting_mta=settings.server.hostname,
                original_sender=mail_from,
                failures=failures,
                original=content,
                queue_id=queue_id or None,
                arrival_date=_get(message_row, "created_at"),
            )
            dsn_id = queue_enqueue.enqueue(
                conn, mail_from="", rcpt_to=[mail_from], content=dsn, category="system",
                source=f"dsn:{queue_id}" if queue_id else "dsn",
                hooks=(enqueue_hook(settings),),
            )
    except queue_enqueue.EnqueueError as e:
        maillog.event("bounce", queue_id or None, dsn="not sent", to=f"<{mail_from}>",
                      reason=str(e))
        return
    maillog.event("bounce", queue_id or None, dsn=dsn_id, to=f"<{mail_from}>")
