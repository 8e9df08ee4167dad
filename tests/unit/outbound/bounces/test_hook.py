"""The enqueue hook: suppressed recipients marked, compliance BCC added."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine

from mailcase.config import Settings
from mailcase.outbound.bounces import hook as bounce_hook
from mailcase.outbound.bounces import suppression
from mailcase.outbound.models import outbound_contents, outbound_messages, outbound_recipients
from mailcase.outbound.queue.enqueue import enqueue
from mailcase.platform import build_outbound
from mailcase.storage.db import begin_write
from tests.unit.outbound.bounces.helpers import ORIGINAL


def test_enqueue_marks_suppressed_recipients_and_adds_compliance_bcc(
    db_engine: Engine, settings: Settings
) -> None:
    settings.dkim.compliance_bcc = ["Archive@example.test"]
    assert bounce_hook.compliance_recipients(settings) == ["Archive@example.test"]
    with begin_write(db_engine) as conn:
        suppression.suppress(conn, "gone@elsewhere.test", status="5.1.1", reason="x")
    with begin_write(db_engine) as conn:
        qid = enqueue(conn, hooks=build_outbound(settings).enqueue_hooks, mail_from="support@example.test",
                      rcpt_to=["Gone@elsewhere.test", "ok@elsewhere.test"], content=ORIGINAL)
    with db_engine.connect() as conn:
        pk = conn.execute(select(outbound_messages.c.id).where(
            outbound_messages.c.queue_id == qid)).scalar_one()
        states = dict(conn.execute(select(outbound_recipients.c.address,
                                          outbound_recipients.c.state)
                                   .where(outbound_recipients.c.message_pk == pk)).all())
        content = conn.execute(select(outbound_contents.c.content).where(
            outbound_contents.c.message_pk == pk)).scalar_one()
    assert states == {"Gone@elsewhere.test": "suppressed", "ok@elsewhere.test": "queued",
                      "Archive@example.test": "queued"}
    assert b"Archive" not in bytes(content)  # silent: the copy is not visible in the headers
