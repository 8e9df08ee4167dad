"""Replies on a case, on both engines: queued with the token and a remembered Message-ID, in
one transaction with the case email; the customer's answer threads back."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from mailcase.features.cases.reply import ReplyError, send_reply
from mailcase.features.cases.store import cases as case_store
from mailcase.features.cases.store import emails as email_store
from mailcase.features.cases.store import routing as routing_store
from mailcase.features.cases.threadtoken import find_case_ids
from mailcase.mime import parse_message
from mailcase.outbound.models import outbound_contents, outbound_messages
from mailcase.secrets import server_secret
from tests.unit.features.cases.helpers import deliver, eml, settings


async def test_reply_is_queued_signed_and_threads_back(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    routing_store.add_routing(db_engine, "support@ours.test", name="Ours Support")
    await deliver(db_engine, s, eml(message_id="<q1@customer.test>", subject="Broken screen"))
    case = case_store.get_case(db_engine, 1)
    assert case is not None
    result = send_reply(db_engine, s, "00000001", body="Send it in, please.")
    assert result.to == ("ann@customer.test",)
    with db_engine.connect() as c:
        row = c.execute(
            select(outbound_messages.c.id, outbound_messages.c.mail_from, outbound_messages.c.category,
                   outbound_messages.c.source, outbound_messages.c.message_id)
            .where(outbound_messages.c.queue_id == result.outbound_queue_id)
        ).one()
        content = c.execute(select(outbound_contents.c.content).where(outbound_contents.c.message_pk == row[0])).scalar_one()
    assert tuple(row[1:]) == ("support@ours.test", "user", "case:00000001", result.message_id)
    sent = parse_message(bytes(content))
    assert sent.in_reply_to == "<q1@customer.test>" and sent.message_id == result.message_id
    assert sent.subject.startswith("Re: Broken screen [ thread::")
    secret = server_secret(s)
    assert find_case_ids(secret, sent.subject) == ([case.id], [])
    assert find_case_ids(secret, sent.text_body) == ([case.id], [])
    assert sent.from_name == "Ours Support"
    emails = email_store.list_emails(db_engine, 1) or []
    assert [e.direction for e in emails] == ["inbound", "outbound"]
    assert emails[1].outbound_queue_id == result.outbound_queue_id
    # The customer's client keeps only References to our reply: threads by Message-ID.
    await deliver(db_engine, s, eml(subject="new words", references=result.message_id))
    assert len(case_store.list_cases(db_engine)) == 1
    assert len(email_store.list_emails(db_engine, 1) or []) == 3


async def test_reply_errors(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    with pytest.raises(ReplyError, match="no case 00000042"):
        send_reply(db_engine, s, 42, body="x")
    routing_store.add_routing(db_engine, "support@ours.test")
    await deliver(db_engine, s, eml())
    with pytest.raises(ReplyError, match="needs a body"):
        send_reply(db_engine, s, 1, body="  ")
    with pytest.raises(ReplyError):
        send_reply(db_engine, s, 1, body="x", to=["not an address"])
    assert [e.direction for e in email_store.list_emails(db_engine, 1) or []] == ["inbound"]  # nothing half-done
