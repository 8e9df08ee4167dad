"""The engine's side of the queue (claim, record, hold) on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select

from mailcase.outbound.models import outbound_attempts, outbound_messages
from mailcase.outbound.queue import claim as queue_claim
from mailcase.outbound.queue import enqueue as queue_enqueue
from mailcase.outbound.queue import views as queue_views
from mailcase.outbound.queue.claim import Completion, RecipientResult
from mailcase.storage import emaillog
from mailcase.storage.db import begin_write

T0 = datetime.now(UTC).replace(microsecond=0)
MSG = b"From: a@sender.test\r\nMessage-ID: <q@sender.test>\r\n\r\nhi\r\n"


def _enqueue(engine: Engine, n: int = 1, **kw: Any) -> list[str]:
    args: dict[str, Any] = {"mail_from": "a@sender.test", "rcpt_to": ["b@example.net"],
                            "content": MSG}
    args.update(kw)
    with begin_write(engine) as conn:
        return [queue_enqueue.enqueue(conn, **args) for _ in range(n)]


def _never(created: datetime, now: datetime, attempts: int) -> datetime | None:
    return None


def _in_ten_minutes(created: datetime, now: datetime, attempts: int) -> datetime | None:
    return now + timedelta(minutes=10)


def _result(rc: queue_claim.ClaimedRecipient, outcome: str, **kw: Any) -> RecipientResult:
    return RecipientResult(recipient=rc, outcome=outcome, **kw)


def test_claim_records_the_attempt_before_any_connection(db_engine: Engine) -> None:
    (qid,) = _enqueue(db_engine, rcpt_to=["b@example.net", "c@example.org"])
    now = datetime.now(UTC) + timedelta(seconds=1)
    (msg,) = queue_claim.claim(db_engine, limit=10, lease=900, now=now)
    assert msg.queue_id == qid and msg.attempt == 1 and msg.content == MSG
    assert [r.address for r in msg.recipients] == ["b@example.net", "c@example.org"]
    with db_engine.connect() as conn:
        rows = conn.execute(select(outbound_attempts)).all()
        m = conn.execute(select(outbound_messages)).one()
    assert {r.result for r in rows} == {"inflight"} and len(rows) == 2
    assert m.next_attempt_at >= now + timedelta(seconds=899)  # leased
    assert queue_claim.claim(db_engine, limit=10, lease=900, now=now) == []  # not twice


def test_delivered_and_bounced_results(db_engine: Engine) -> None:
    (qid,) = _enqueue(db_engine, rcpt_to=["b@example.net", "c@example.org"])
    (msg,) = queue_claim.claim(db_engine, limit=10, lease=900)
    b, c = msg.recipients
    bounced: list[tuple[dict[str, Any], list[dict[str, Any]], str]] = []

    def on_bounce(conn: Connection, row: dict[str, Any], rcpts: list[dict[str, Any]],
                  reply: str) -> None:
        bounced.append((row, rcpts, reply))

    done = queue_claim.record(
        db_engine,
        [Completion(msg, (_result(b, "delivered", code=250, text="2.0.0 Ok",
                                  remote_host="mx.example.net", remote_ip="127.0.0.1",
                                  remote_port=25, tls_version="TLSv1.3",
                                  tls_cipher="TLS_AES_128_GCM_SHA256", tls_verified=True,
                                  verified_by="CA"),
                          _result(c, "permanent", stage="rcpt", code=550,
                                  text="5.1.1 no such user")), True)],
        schedule=_never, on_bounce=on_bounce,
    )
    assert [d.status for d in done] == ["sent", "bounced"]
    m = queue_views.show_message(db_engine, qid)
    assert m is not None and m["state"] == "bounced" and m["finished_at"] is not None
    assert [(r["address"], r["state"]) for r in m["recipients"]] == [
        ("b@example.net", "delivered"), ("c@example.org", "bounced")]
    assert bounced and bounced[0][0]["queue_id"] == qid
    assert bounced[0][1] == [{"address": "c@example.org", "stage": "rcpt", "code": 550,
                              "reply": "5.1.1 no such user", "remote_host": None}]
    a = {x["recipient"]: x for x in m["attempts"]}
    assert a["b@example.net"]["tls_verified"] and a["b@example.net"]["verified_by"] == "CA"
    log = {r["rcpt_to"][0]: r for r in emaillog.query(db_engine, queue_id=qid)}
    assert log["b@example.net"]["outcome"] == "delivered"
    # Issue 12.8: each outbound fact in its own column; helo/client_ip stay inbound's.
    ok = log["b@example.net"]
    assert (ok["remote_host"], ok["remote_ip"], ok["remote_port"]) == (
        "mx.example.net", "127.0.0.1", 25)
    assert (ok["tls_version"], ok["tls_cipher"]) == ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    assert (ok["tls_verified"], ok["tls_basis"], ok["attempt"]) == (True, "ca", 1)
    assert ok["helo"] is None and ok["client_ip"] is None and ok["reason"] is None
    assert ok["delay"] is not None and ok["delay"] >= 0 and ok["stage"] is None
    assert log["c@example.org"]["outcome"] == "bounced"
    assert log["c@example.org"]["stage"] == "rcpt"
    assert log["c@example.org"]["tls_verified"] is None  # no session: nothing to say


def test_transient_failure_is_rescheduled_then_bounces_when_time_is_up(
    db_engine: Engine,
) -> None:
    (qid,) = _enqueue(db_engine)
    (msg,) = queue_claim.claim(db_engine, limit=10, lease=900)
    (rc,) = msg.recipients
    fail = Completion(msg, (_result(rc, "transient", stage="connect", text="refused"),), True)
    queue_claim.record(db_engine, [fail], schedule=_in_ten_minutes)
    m = queue_views.show_message(db_engine, qid)
    assert m is not None and m["state"] == "queued"
    assert m["recipients"][0]["state"] == "deferred"
    assert m["next_attempt_at"] > datetime.now(UTC) + timedelta(minutes=9)
    # The next attempt fails too, and the queue time is up.
    later = datetime.now(UTC) + timedelta(minutes=11)
    (msg2,) = queue_claim.claim(db_engine, limit=10, lease=900, now=later)
    assert msg2.attempt == 2
    bounced: list[str] = []
    queue_claim.record(
        db_engine,
        [Completion(msg2, (_result(msg2.recipients[0], "transient", stage="connect",
                                   text="refused"),), True)],
        schedule=_never, now=later,
        on_bounce=lambda conn, row, rcpts, reply: bounced.append(reply),
    )
    m = queue_views.show_message(db_engine, qid)
    assert m is not None and m["state"] == "bounced"
    assert m["recipients"][0]["state"] == "bounced"
    assert m["recipients"][0]["last_reply"].startswith("5.4.7 gave up")
    assert bounced and "gave up" in bounced[0]


def test_an_interrupted_attempt_is_closed_and_retried(db_engine: Engine) -> None:
    (qid,) = _enqueue(db_engine)
    queue_claim.claim(db_engine, limit=10, lease=900)  # ... and the process dies here
    assert queue_claim.recover_inflight(db_engine) == 1
    (again,) = queue_claim.claim(db_engine, limit=10, lease=900,
                                 now=datetime.now(UTC) + timedelta(seconds=1))
    assert again.attempt == 2
    m = queue_views.show_message(db_engine, qid)
    assert m is not None
    first, second = m["attempts"]
    assert first["result"] == "transient" and "interrupted" in first["reply_text"]
    assert second["result"] == "inflight"


def test_access_levels_hold_and_release(db_engine: Engine) -> None:
    user = _enqueue(db_engine, category="user")[0]
    auto = _enqueue(db_engine, category="auto")[0]
    system = _enqueue(db_engine, category="system")[0]
    reset = _enqueue(db_engine, category="system", source="password-reset:42")[0]
    later = datetime.now(UTC) + timedelta(seconds=1)
    claimed = queue_claim.claim(db_engine, limit=10, lease=900, access_level="none", now=later)
    assert [c.queue_id for c in claimed] == [reset]
    states = {r["queue_id"]: r["state"] for r in queue_views.list_messages(db_engine)}
    assert states == {user: "held", auto: "held", system: "held", reset: "queued"}
    assert queue_claim.release_held(db_engine, "system") == 1
    claimed = queue_claim.claim(db_engine, limit=10, lease=900, access_level="system",
                                now=later + timedelta(seconds=1))
    assert [c.queue_id for c in claimed] == [system]
    assert queue_claim.release_held(db_engine, "all") == 2
    assert queue_views.queue_counts(db_engine) == {"queued": 4}


def test_concurrent_claimers_never_take_the_same_message(db_engine: Engine) -> None:
    ids = set(_enqueue(db_engine, 60))
    got: list[list[str]] = [[], [], []]
    barrier = threading.Barrier(3)

    def worker(i: int) -> None:
        barrier.wait()
        while batch := queue_claim.claim(db_engine, limit=7, lease=900):
            got[i].extend(m.queue_id for m in batch)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [q for g in got for q in g]
    assert sorted(every) == sorted(ids)  # all claimed, none twice
