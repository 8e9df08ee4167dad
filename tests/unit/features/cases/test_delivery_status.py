"""Delivery status of outbound case emails, on both engines: the queue's recipient states and
later DSNs (bounce events) show on the case email, found in one query per case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, event

from mailcase.features.cases.delivery_status import case_delivery, format_delivery
from mailcase.features.cases.reply import send_reply
from mailcase.features.cases.store import emails as email_store
from mailcase.features.cases.store import routing as routing_store
from mailcase.outbound.bounces.suppression import record_bounce
from mailcase.outbound.queue import claim as queue_claim
from mailcase.outbound.queue.claim import Completion, RecipientResult
from mailcase.storage.db import begin_write
from tests.unit.features.cases.helpers import deliver, eml, settings


def _in_ten_minutes(created: datetime, now: datetime, attempts: int) -> datetime | None:
    return now + timedelta(minutes=10)


def _never(created: datetime, now: datetime, attempts: int) -> datetime | None:
    return None


async def _case_with_reply(engine: Engine, tmp: Path, to: tuple[str, ...]) -> str:
    s = settings(tmp)
    routing_store.add_routing(engine, "support@ours.test", name="Ours Support")
    await deliver(engine, s, eml(message_id="<q1@customer.test>", subject="Broken screen"))
    return send_reply(engine, s, 1, body="Send it in, please.", to=to).outbound_queue_id


async def test_reply_goes_from_queued_to_deferred_to_bounced(
    db_engine: Engine, tmp_path: Path
) -> None:
    qid = await _case_with_reply(db_engine, tmp_path, ("ann@customer.test", "bob@other.test"))
    emails = email_store.list_emails(db_engine, 1) or []
    inbound, reply = emails
    d = case_delivery(db_engine, "00000001")
    assert d is not None and set(d) == {reply.id}  # inbound emails have no delivery
    assert d[reply.id]["queue_id"] == qid and d[reply.id]["state"] == "queued"
    assert [r["state"] for r in d[reply.id]["recipients"]] == ["queued", "queued"]

    (msg,) = queue_claim.claim(db_engine, limit=10, lease=900)
    ann, bob = sorted(msg.recipients, key=lambda r: r.address)
    queue_claim.record(db_engine, [Completion(msg, (
        RecipientResult(ann, "delivered", stage="data", code=250, text="2.0.0 Ok"),
        RecipientResult(bob, "transient", stage="connect", text="connection refused"),
    ), True)], schedule=_in_ten_minutes)
    d = case_delivery(db_engine, 1) or {}
    assert d[reply.id]["state"] == "deferred"
    rc = {r["address"]: r for r in d[reply.id]["recipients"]}
    assert rc["ann@customer.test"]["state"] == "delivered"
    assert rc["bob@other.test"]["state"] == "deferred"
    assert rc["bob@other.test"]["last_stage"] == "connect"
    assert rc["bob@other.test"]["last_reply"] == "connection refused"

    (msg2,) = queue_claim.claim(db_engine, limit=10, lease=900, now=datetime.now(UTC) + timedelta(hours=1))
    (bob2,) = msg2.recipients
    queue_claim.record(db_engine, [Completion(msg2, (
        RecipientResult(bob2, "permanent", stage="rcpt", code=550, text="5.1.1 no such user"),
    ), True)], schedule=_never)
    d = case_delivery(db_engine, 1) or {}
    assert d[reply.id]["state"] == "bounced"
    assert d[reply.id]["bounced_at"] is not None and d[reply.id]["delivered_at"] is None
    rc = {r["address"]: r for r in d[reply.id]["recipients"]}
    assert (rc["bob@other.test"]["state"], rc["bob@other.test"]["last_reply_code"]) == (
        "bounced", 550)
    assert rc["ann@customer.test"]["state"] == "delivered"
    text = "\n".join(format_delivery(d[reply.id]))
    assert "Delivery: bounced" in text and "bob@other.test: bounced at rcpt - 550 5.1.1" in text


async def test_a_later_dsn_turns_a_delivered_reply_bounced(
    db_engine: Engine, tmp_path: Path
) -> None:
    qid = await _case_with_reply(db_engine, tmp_path, ("ann@customer.test",))
    (msg,) = queue_claim.claim(db_engine, limit=10, lease=900)
    queue_claim.record(db_engine, [Completion(msg, (
        RecipientResult(msg.recipients[0], "delivered", stage="data", code=250, text="2.0.0 Ok"),
    ), True)], schedule=_never)
    reply = (email_store.list_emails(db_engine, 1) or [])[1]
    d = case_delivery(db_engine, 1) or {}
    assert d[reply.id]["state"] == "delivered" and d[reply.id]["delivered_at"] is not None
    assert d[reply.id]["recipients"][0]["dsn_status"] is None
    # The remote MTA accepted it, then sent a DSN (as the bounce destination records it).
    with begin_write(db_engine) as conn:
        assert record_bounce(
            conn, source="dsn:INBOUND1", recipient="Ann@Customer.test", status="5.2.2",
            action="failed", outbound_queue_id=qid, diagnostic="smtp; 552 mailbox full",
        ) == "hard"
    d = case_delivery(db_engine, 1) or {}
    assert d[reply.id]["state"] == "bounced" and d[reply.id]["bounced_at"] is not None
    (rc,) = d[reply.id]["recipients"]
    assert (rc["state"], rc["dsn_status"], rc["dsn_diagnostic"]) == (
        "bounced", "5.2.2", "smtp; 552 mailbox full")


async def test_one_query_for_many_replies(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    await _case_with_reply(db_engine, tmp_path, ("ann@customer.test",))
    for i in range(4):
        send_reply(db_engine, s, 1, body=f"more {i}", to=("ann@customer.test", "c@x.test"))
    statements: list[str] = []

    def count(conn: object, cursor: object, stmt: str, *args: object) -> None:
        statements.append(stmt)

    event.listen(db_engine, "before_cursor_execute", count)
    try:
        d = case_delivery(db_engine, 1) or {}
    finally:
        event.remove(db_engine, "before_cursor_execute", count)
    assert len(d) == 5 and sum(len(x["recipients"]) for x in d.values()) == 9
    assert len([x for x in statements if "outbound_messages" in x]) == 1
    assert case_delivery(db_engine, 99) is None
