"""The delivery engine against Postfix's smtp-sink and a local DNS server (real peers)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from mailcase.delivery.engine import DeliveryEngine
from mailcase.outbound.models import outbound_attempts
from mailcase.platform import build_outbound
from mailcase.storage import emaillog
from mailcase.storage.db import make_engine, upgrade
from tests.support.delivery import delivery_settings, enqueue_many, run_until_settled, show
from tests.support.dnsserver import DNSServer
from tests.support.peers import needs
from tests.support.smtpsink import SmtpSink, smtp_sink_available

pytestmark = needs(smtp_sink_available())

ZONE = {
    "example.net": {"MX": [(10, "mx.example.net")]},
    "mx.example.net": {"A": ["127.0.0.1"]},
    "nullmx.test": {"MX": [(0, ".")]},
    "implicit.test": {"A": ["127.0.0.1"]},  # no MX: its own address (RFC 5321 §5.1)
    "dead.test": {"MX": [(10, "mx.dead.test")]},
    "mx.dead.test": {"A": ["127.0.0.1"]},
}


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    with DNSServer(ZONE) as server:
        yield server


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'mailcase.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(dump=True) as s:
        yield s


async def test_messages_are_delivered_once_each(
    tmp_path: Path, dns: DNSServer, db: Engine, sink: SmtpSink
) -> None:
    settings = delivery_settings(tmp_path, dns.address, mx_port=sink.port)
    ids = enqueue_many(db, 60)
    eng = DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery)
    await run_until_settled(eng)
    counts = sink.message_ids()
    assert len(counts) == 60 and set(counts.values()) == {1}
    m = show(db, ids[0])
    assert m["state"] == "delivered" and m["recipients"][0]["state"] == "delivered"
    (att,) = m["attempts"]
    assert att["result"] == "delivered" and att["remote_host"] == "mx.example.net"
    assert att["remote_ip"] == "127.0.0.1" and att["tls_version"] is None  # sink has no TLS
    assert att["reply_code"] == 250 and att["stage"] is None
    rows = emaillog.query(db, queue_id=ids[0])
    assert [(r["direction"], r["outcome"]) for r in rows] == [("outbound", "delivered")]
    # Issue 12.8: the outbound facts in their own columns, not in helo/client_ip or reason.
    row = rows[0]
    assert (row["remote_host"], row["remote_ip"], row["remote_port"]) == (
        "mx.example.net", "127.0.0.1", sink.port)
    assert row["tls_version"] is None and row["tls_verified"] is False
    assert row["helo"] is None and row["client_ip"] is None
    assert row["attempt"] == 1 and row["tls_mode"] == "preferred"


async def test_one_connection_carries_all_recipients_of_a_domain(
    tmp_path: Path, dns: DNSServer, db: Engine, sink: SmtpSink
) -> None:
    settings = delivery_settings(tmp_path, dns.address, mx_port=sink.port)
    enqueue_many(db, 1, rcpt_to=["a@example.net", "b@example.net", "c@implicit.test"])
    await run_until_settled(DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery))
    txs = sink.transactions()
    assert len(txs) == 2  # example.net (two RCPTs in one transaction), implicit.test
    rcpt_lines = sorted(
        line for t in txs for line in t.splitlines() if line.startswith(b"X-Rcpt-Args")
    )
    assert rcpt_lines == [b"X-Rcpt-Args: <a@example.net>", b"X-Rcpt-Args: <b@example.net>",
                          b"X-Rcpt-Args: <c@implicit.test>"]
    per_tx = sorted(t.count(b"X-Rcpt-Args") for t in txs)
    assert per_tx == [1, 2]


async def test_null_mx_bounces_at_once(
    tmp_path: Path, dns: DNSServer, db: Engine, sink: SmtpSink
) -> None:
    settings = delivery_settings(tmp_path, dns.address, mx_port=sink.port)
    (qid,) = enqueue_many(db, 1, rcpt_to=["x@nullmx.test"])
    await run_until_settled(DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery))
    m = show(db, qid)
    assert m["state"] == "bounced"
    r = m["recipients"][0]
    assert r["state"] == "bounced" and r["last_stage"] == "route"
    assert r["last_reply_code"] == 556 and "null MX" in r["last_reply"]
    assert sink.files() == []


async def test_unreachable_host_defers_with_backoff(
    tmp_path: Path, dns: DNSServer, db: Engine
) -> None:
    closed = SmtpSink()  # a port nobody listens on
    settings = delivery_settings(tmp_path, dns.address, mx_port=closed.port,
                                 retry_jitter=0.0)
    (qid,) = enqueue_many(db, 1, rcpt_to=["x@dead.test"])
    t0 = datetime.now(UTC)
    await run_until_settled(DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery))
    m = show(db, qid)
    assert m["state"] == "queued" and m["recipients"][0]["state"] == "deferred"
    assert m["recipients"][0]["last_stage"] == "connect"
    # the first retry is retry_base (300 s) after the attempt
    assert t0 + timedelta(seconds=299) < m["next_attempt_at"] < t0 + timedelta(seconds=320)
    with db.connect() as conn:
        (att,) = conn.execute(select(outbound_attempts)).all()
    assert att.result == "transient" and att.stage == "connect"
    assert emaillog.query(db, queue_id=qid)[0]["outcome"] == "deferred"


async def test_rejected_recipient_bounces_and_the_other_is_delivered(
    tmp_path: Path, dns: DNSServer, db: Engine
) -> None:
    # smtp-sink -f RCPT rejects every RCPT with 5xx; use two sinks? Simpler: hard-reject RCPT.
    with SmtpSink(dump=True, extra=("-f", "RCPT")) as picky:
        settings = delivery_settings(tmp_path, dns.address, mx_port=picky.port)
        (qid,) = enqueue_many(db, 1, rcpt_to=["x@example.net"])
        await run_until_settled(DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery))
        m = show(db, qid)
    assert m["state"] == "bounced"
    r = m["recipients"][0]
    assert r["state"] == "bounced" and r["last_stage"] == "rcpt" and r["last_reply_code"] >= 500


async def test_a_permanent_failure_goes_through_the_bounce_hook(
    tmp_path: Path, dns: DNSServer, db: Engine, sink: SmtpSink
) -> None:
    """The engine, built with the composition root's hooks (`build_outbound`), hands
    permanent failures to mailcase.outbound.bounces.notify.on_permanent_failure, which queues a DSN
    to the sender in the same transaction. A platform built without that hook fails here."""
    from mailcase.outbound.queue import views as queue_views

    settings = delivery_settings(tmp_path, dns.address, mx_port=sink.port)
    eng = DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery)
    (qid,) = enqueue_many(db, 1, mail_from="someone@example.net", rcpt_to=["x@nullmx.test"])
    await run_until_settled(eng)
    dsns = [m for m in queue_views.list_messages(db) if m["queue_id"] != qid]
    assert len(dsns) == 1, dsns
    (dsn,) = dsns
    assert dsn["mail_from"] == "" and dsn["category"] == "system"
    assert dsn["recipients"] == [{"address": "someone@example.net", "state": "delivered"}]
    (tx,) = sink.transactions()
    assert b"multipart/report" in tx and b"x@nullmx.test" in tx


async def test_retries_follow_the_schedule_then_bounce_with_an_injected_clock(
    tmp_path: Path, dns: DNSServer, db: Engine
) -> None:
    closed = SmtpSink()  # a port nobody listens on
    settings = delivery_settings(tmp_path, dns.address, mx_port=closed.port, retry_jitter=0.0,
                                 max_queue_time=3600)
    (qid,) = enqueue_many(db, 1, rcpt_to=["x@dead.test"])
    now = [datetime.now(UTC)]
    eng = DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery, clock=lambda: now[0])
    expected_waits = [300, 600, 1200]  # 5, 10, 20 minutes
    for wait in expected_waits:
        await run_until_settled(eng)
        m = show(db, qid)
        assert m["state"] == "queued"
        assert m["next_attempt_at"] - now[0] == timedelta(seconds=wait)
        now[0] = m["next_attempt_at"]  # time passes until the retry is due
    await run_until_settled(eng)  # 4th attempt at +35 min; the next would be +75 > 60 min
    m = show(db, qid)
    assert m["next_attempt_at"] == m["created_at"] + timedelta(seconds=3600)  # the deadline
    now[0] = m["next_attempt_at"]
    await run_until_settled(eng)
    m = show(db, qid)
    assert m["state"] == "bounced" and len(m["attempts"]) == 5
    assert m["recipients"][0]["last_reply"].startswith("5.4.7 gave up after 1.0 h")
    outcomes = [r["outcome"] for r in emaillog.query(db, queue_id=qid)]
    assert outcomes.count("deferred") == 5 and outcomes.count("bounced") == 1


async def test_two_engines_on_one_database_deliver_each_message_once(
    tmp_path: Path, dns: DNSServer, db_engine: Engine, sink: SmtpSink
) -> None:
    """Two nodes sharing one database (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the write
    lock): every message is claimed by one of them only."""
    import asyncio

    settings = delivery_settings(tmp_path, dns.address, mx_port=sink.port, batch_size=20)
    enqueue_many(db_engine, 200)
    a, b = DeliveryEngine(settings, db_engine, hooks=build_outbound(settings).delivery), DeliveryEngine(settings, db_engine, hooks=build_outbound(settings).delivery)
    await asyncio.gather(run_until_settled(a), run_until_settled(b))
    counts = sink.message_ids()
    assert len(counts) == 200 and set(counts.values()) == {1}
    assert a.delivered + b.delivered == 200
    assert a.delivered > 0 and b.delivered > 0, (a.delivered, b.delivered)


async def test_stopping_never_waits_on_a_peer_that_does_not_answer_quit(
    tmp_path: Path, dns: DNSServer, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop closes kept-open connections at once, without QUIT: a peer that never answers
    QUIT (smtp-sink cannot be told to) must not hold the stop up."""
    import asyncio

    import mailcase.delivery.engine as engine_mod

    monkeypatch.setattr(engine_mod, "_LINGER", 30.0)  # keep the connection open for more mail
    commands: list[bytes] = []

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 silent.test ESMTP\r\n")
        in_data = False
        while line := await reader.readline():
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    writer.write(b"250 2.0.0 queued\r\n")
                continue
            verb = line.split()[0].upper() if line.split() else b""
            commands.append(verb)
            if verb == b"QUIT":
                continue  # never answered
            if verb == b"DATA":
                in_data = True
                writer.write(b"354 go ahead\r\n")
            else:
                writer.write(b"250 ok\r\n")
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = delivery_settings(tmp_path, dns.address, mx_port=port)
        (qid,) = enqueue_many(db, 1)
        task = asyncio.create_task(DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery).run())
        for _ in range(200):  # bounded: 10 s
            if show(db, qid)["state"] == "delivered":
                break
            await asyncio.sleep(0.05)
        assert show(db, qid)["state"] == "delivered"
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=3)  # a QUIT wait would take 5 s
        assert done, "the stop waited on the peer"
        assert b"QUIT" not in commands and b"DATA" in commands
    finally:
        server.close()
