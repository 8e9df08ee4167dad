"""Tasks made by Email-to-Case routing addresses ("create a task with status X"), and the
task service, through the real pipeline on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, update

from mailcase.features.cases.models import case_emails, cases
from mailcase.features.cases.store import cases as case_store
from mailcase.features.cases.store import routing as routing_store
from mailcase.features.tasks import service
from mailcase.pipeline.worker import process_pending
from mailcase.platform import build_destinations
from mailcase.storage.db import begin_write
from mailcase.storage.models import inbound_deliveries, inbound_messages
from tests.unit.features.cases.helpers import deliver, eml, settings


async def test_task_status_makes_one_task_for_a_new_case(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    routing_store.add_routing(db_engine, "support@ours.test", priority="High", owner="alice", task_status="Not Started")
    body = "It is burning.\r\n" + "x" * 1500 + "\r\n"
    await deliver(db_engine, s, eml(subject="Printer on fire", body=body, message_id="<t1@customer.test>"))
    (case,) = case_store.list_cases(db_engine)
    (task,) = service.list_tasks(db_engine)
    assert (task.subject, task.status, task.priority, task.owner) == ("Email: Printer on fire", "Not Started", "High", "alice")
    assert (task.case_id, task.case_number) == (case.id, case.number)
    assert task.description.startswith("It is burning.\n") and len(task.description) == 1000
    # A reply on the same case adds an email, not a task.
    await deliver(db_engine, s, eml(subject="Re: Printer on fire", in_reply_to="<t1@customer.test>"))
    assert len(case_store.list_cases(db_engine)) == 1
    assert len(service.list_tasks(db_engine)) == 1


async def test_queue_is_the_owner_and_long_subjects_are_cut(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    routing_store.add_routing(db_engine, "support@ours.test", queue="Tier 1", task_status="Waiting")
    await deliver(db_engine, s, eml(subject="word " * 100))
    (task,) = service.list_tasks(db_engine, status="Waiting")
    assert task.owner == "Tier 1" and task.priority == "Medium"
    assert len(task.subject) == service.SUBJECT_LIMIT and task.subject.endswith("…")
    assert task.subject.startswith("Email: word word")


async def test_without_task_status_no_task(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    routing_store.add_routing(db_engine, "support@ours.test")
    await deliver(db_engine, s, eml())
    assert len(case_store.list_cases(db_engine)) == 1
    assert service.list_tasks(db_engine) == []


async def test_duplicate_and_reprocessed_message_still_one_task(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    routing_store.add_routing(db_engine, "support@ours.test", task_status="Not Started")
    routing_store.add_routing(db_engine, "help@ours.test", task_status="Not Started")
    content = eml(message_id="<dup@customer.test>", to="support@ours.test, help@ours.test")
    # Two routing aliases in one message: one case, one task.
    await deliver(db_engine, s, content, rcpt_to=("help@ours.test", "support@ours.test"))
    # The same message again (a sender's retry, new Received header): a duplicate.
    again = content.replace(b"Received: from client.customer.test", b"Received: from relay2.customer.test")
    await deliver(db_engine, s, again, rcpt_to=("support@ours.test",))
    assert len(service.list_tasks(db_engine)) == 1
    # Every message handed to the pipeline once more, as after a lost "processed" mark.
    with begin_write(db_engine) as conn:
        conn.execute(delete(inbound_deliveries))
        conn.execute(update(inbound_messages).values(state="received"))
    assert process_pending(db_engine, build_destinations(s, db_engine)) == 2
    assert len(case_store.list_cases(db_engine)) == 1
    (task,) = service.list_tasks(db_engine)
    assert task.case_number == "00000001"


async def test_set_status_filters_and_case_delete(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    routing_store.add_routing(db_engine, "support@ours.test", task_status="Not Started")
    await deliver(db_engine, s, eml(subject="one"))
    await deliver(db_engine, s, eml(subject="two"))
    t2, t1 = service.list_tasks(db_engine)
    assert (t1.subject, t2.subject) == ("Email: one", "Email: two")
    assert [t.id for t in service.list_tasks(db_engine, case_number=1)] == [t1.id]
    assert [t.id for t in service.list_tasks(db_engine, case_id=t2.case_id)] == [t2.id]
    changed = service.set_status(db_engine, t1.id, "  In   Progress ")
    assert changed is not None and changed.status == "In Progress"
    assert changed.updated_at >= t1.updated_at
    assert [t.id for t in service.list_tasks(db_engine, status="In Progress")] == [t1.id]
    assert [t.id for t in service.list_tasks(db_engine, status="Not Started")] == [t2.id]
    assert service.set_status(db_engine, 999_999, "Completed") is None
    with pytest.raises(ValueError, match="must not be empty"):
        service.set_status(db_engine, t1.id, "   ")
    # A task outlives its case (ON DELETE SET NULL).
    with begin_write(db_engine) as conn:
        conn.execute(delete(case_emails).where(case_emails.c.case_id == t1.case_id))
        conn.execute(delete(cases).where(cases.c.id == t1.case_id))
    got = service.get_task(db_engine, t1.id)
    assert got is not None and got.case_id is None and got.case_number is None
