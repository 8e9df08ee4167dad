"""The pipeline destination of inbound DSNs (mail to our VERP bounce addresses).

A DSN arriving there is parsed (`InboundEmail.delivery_report`), tied to the outbound message
by the queue id in the address (the returned Message-ID is the fallback) and recorded through
`mailcase.outbound.bounces.suppression.record_bounce`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from mailcase import maillog
from mailcase.config import Settings
from mailcase.outbound.bounces.suppression import record_bounce
from mailcase.outbound.bounces.verp import load_verp_key
from mailcase.outbound.models import outbound_messages, outbound_recipients
from mailcase.policy.recipients import VERP_PREFIX, verp_queue_id
from mailcase.storage import messages
from mailcase.storage.models import utcnow

if TYPE_CHECKING:
    from mailcase.mime.model import DeliveryReport

__all__ = [
    "BounceDestination",
]


def _find_outbound(conn: Connection, qid: str | None, message_id: str | None) -> Any:
    m = outbound_messages.c
    cols = (m.id, m.queue_id, m.mail_from, m.message_id)
    if qid:
        row = conn.execute(
            select(*cols).where(m.queue_id.in_([qid, qid.upper()]))
        ).first()
        if row is not None:
            return row
    if message_id:
        return conn.execute(
            select(*cols).where(m.message_id == message_id).order_by(m.id.desc()).limit(1)
        ).first()
    return None


def _report(raw: bytes) -> DeliveryReport | None:
    from mailcase.mime import parse_message  # heavy; only the pipeline needs it

    return parse_message(raw).delivery_report


class BounceDestination:
    """Pipeline destination for mail to our VERP bounce addresses (other addresses: no-op)."""

    name = "bounces"

    def __init__(self, settings: Settings | None = None) -> None:
        self._key: bytes | None = None
        self._prepared: dict[int, DeliveryReport | None] = {}

    def prepare(self, engine: Engine, batch: Sequence[messages.MessageSummary]) -> None:
        """Parse the batch's DSNs before the write transaction (SQLite: outside its lock)."""
        self._prepared = {}
        wanted = [m for m in batch if any(a.lower().startswith(VERP_PREFIX) for a in m.rcpt_to)]
        if not wanted:
            return
        with engine.connect() as conn:
            for m in wanted:
                self._prepared[m.id] = _report(messages.load_content(conn, m.id))

    def release(self) -> None:
        """Drop the parsed reports once the batch is done."""
        self._prepared = {}

    def _verp_key(self, conn: Connection) -> bytes | None:
        if self._key is None:
            self._key = load_verp_key(conn)
        return self._key

    def deliver(self, conn: Connection, message: messages.MessageSummary, address: str) -> None:
        if not address.lower().startswith(VERP_PREFIX):
            return
        key = self._verp_key(conn)
        qid = verp_queue_id(key, address) if key is not None else None
        if qid is None:
            return  # not one of ours (RCPT refuses those; an older key, say): nothing to do
        self._process(conn, message, qid)

    def deliver_many(self, conn: Connection, batch: Sequence[messages.MessageSummary]) -> None:
        for m in batch:
            for address in m.rcpt_to:
                self.deliver(conn, m, address)

    def _process(self, conn: Connection, message: messages.MessageSummary, qid: str) -> None:
        if message.id in self._prepared:
            report = self._prepared[message.id]
        else:
            report = _report(messages.load_content(conn, message.id))
        source = f"dsn:{message.queue_id}"
        if report is None or not report.recipients:
            maillog.event("bounce", message.queue_id, verp=qid, status="ignored",
                          reason="not a delivery status report")
            return
        original = _find_outbound(conn, qid, report.original_message_id)
        out_qid = original.queue_id if original is not None else None
        out_rcpts: dict[str, int] = {}
        if original is not None:
            out_rcpts = {
                str(a).lower(): int(pk)
                for pk, a in conn.execute(
                    select(outbound_recipients.c.id, outbound_recipients.c.address).where(
                        outbound_recipients.c.message_pk == original.id
                    )
                )
            }
        for rec in report.recipients:
            address = rec.final_recipient
            for candidate in (rec.original_recipient, rec.final_recipient):
                if candidate and candidate.lower() in out_rcpts:
                    address = candidate
                    break
            kind = record_bounce(
                conn,
                source=source,
                recipient=address,
                status=rec.status or None,
                action=rec.action or "failed",
                outbound_queue_id=out_qid,
                message_id=(original.message_id if original is not None else None)
                or report.original_message_id,
                remote_mta=rec.remote_mta or report.reporting_mta,
                diagnostic=rec.diagnostic_code,
                mail_from=original.mail_from if original is not None else None,
            )
            pk = out_rcpts.get(address.lower())
            if kind == "hard" and pk is not None:
                conn.execute(
                    update(outbound_recipients)
                    .where(outbound_recipients.c.id == pk,
                           outbound_recipients.c.state == "delivered")
                    .values(state="bounced", last_reply=(rec.diagnostic_code or rec.status),
                            updated_at=utcnow())
                )
