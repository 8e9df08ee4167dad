"""What the CLI and the API see and do in the queue (list, show, retry now), on SQLite and
PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Engine

from mailcase.outbound.queue import claim as queue_claim
from mailcase.outbound.queue import views as queue_views
from mailcase.outbound.queue.claim import Completion
from tests.unit.outbound.queue.test_claim import _enqueue, _in_ten_minutes, _result


def test_retry_now_makes_a_deferred_message_due(db_engine: Engine) -> None:
    (qid,) = _enqueue(db_engine)
    (msg,) = queue_claim.claim(db_engine, limit=10, lease=900)
    queue_claim.record(db_engine, [Completion(msg, (_result(msg.recipients[0], "transient"),), True)],
                       schedule=_in_ten_minutes)
    assert queue_claim.claim(db_engine, limit=10, lease=900) == []
    assert queue_views.retry_now(db_engine, qid)
    assert [m.queue_id for m in queue_claim.claim(db_engine, limit=10, lease=900)] == [qid]
    assert not queue_views.retry_now(db_engine, "NOSUCHID")


def test_list_and_show(db_engine: Engine) -> None:
    (qid,) = _enqueue(db_engine, rcpt_to=["b@example.net"], source="case:7")
    (row,) = queue_views.list_messages(db_engine)
    assert row["queue_id"] == qid and row["source"] == "case:7"
    assert row["recipients"] == [{"address": "b@example.net", "state": "queued"}]
    assert queue_views.list_messages(db_engine, state="delivered") == []
    assert queue_views.show_message(db_engine, "nope") is None
