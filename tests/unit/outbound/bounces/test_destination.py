"""The bounce destination: DSNs to our VERP addresses, through the pipeline."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from mailcase.config import Settings
from mailcase.outbound.bounces import destination as bounce_destination
from mailcase.outbound.bounces import suppression, verp
from mailcase.outbound.dsn import DsnFailure, build_dsn
from mailcase.outbound.queue.enqueue import enqueue
from mailcase.pipeline.worker import AddressInbox, process_pending
from mailcase.platform import build_outbound
from mailcase.storage import emaillog
from mailcase.storage.db import begin_write
from mailcase.storage.spool import Spool
from tests.unit.outbound.bounces.helpers import ORIGINAL
from tests.unit.storage.helpers import accepted_reply, make_message


async def _spool(engine: Engine, *msgs: object) -> None:
    spool = Spool(engine)
    spool.start()
    try:
        for m in msgs:
            await spool.store(m, *accepted_reply(m))  # type: ignore[arg-type]
    finally:
        spool.close()


async def test_dsn_to_a_verp_address_records_hard_and_soft_bounces(
    db_engine: Engine, settings: Settings
) -> None:
    with begin_write(db_engine) as conn:
        qid = enqueue(conn, hooks=build_outbound(settings).enqueue_hooks, mail_from="support@example.test",
                      rcpt_to=["kunde@nirgendwo.example", "zwei@nirgendwo.example"],
                      content=ORIGINAL)
    rp = verp.return_path_for(settings, qid, "support@example.test")
    dsn = build_dsn(
        reporting_mta="mail.nirgendwo.example",
        original_sender=rp,
        failures=[
            DsnFailure("kunde@nirgendwo.example", "5.1.1", "550 5.1.1 User unknown",
                       remote_mta="mx.nirgendwo.example"),
            DsnFailure("zwei@nirgendwo.example", "4.2.2", "452 4.2.2 Mailbox full"),
        ],
        original=ORIGINAL,
    ).replace(b"Action: failed\r\nStatus: 4.2.2", b"Action: delayed\r\nStatus: 4.2.2")
    dest = bounce_destination.BounceDestination(settings)
    msg = make_message(rcpt_to=(rp,), content=bytearray(dsn), mail_from="",
                       message_id=None)
    plain = make_message(rcpt_to=("support@example.test",))
    await _spool(db_engine, msg, plain)
    assert process_pending(db_engine, [AddressInbox(), dest]) == 2

    [hard] = suppression.list_bounces(db_engine)
    assert (hard.address, hard.status, hard.queue_id) == ("kunde@nirgendwo.example", "5.1.1", qid)
    events = {e.recipient: e for e in suppression.list_events(db_engine)}
    assert events["kunde@nirgendwo.example"].kind == "hard"
    assert events["kunde@nirgendwo.example"].message_id == "<orig-1@example.test>"
    assert events["zwei@nirgendwo.example"].kind == "soft"
    assert events["zwei@nirgendwo.example"].action == "delayed"
    # Visible in the email log under the outbound queue id.
    log = emaillog.query(db_engine, queue_id=qid)
    outcomes = sorted(r["outcome"] for r in log)
    assert outcomes == ["bounced", "deferred"]
    hard_log = next(r for r in log if r["outcome"] == "bounced")
    assert hard_log["rcpt_to"] == ["kunde@nirgendwo.example"]
    assert "550 5.1.1" in hard_log["reply_text"]

    # Another DSN about the same address: one more bounce on the same suppression entry.
    again = make_message(rcpt_to=(rp,), content=bytearray(dsn), mail_from="")
    await _spool(db_engine, again)
    process_pending(db_engine, [AddressInbox(), dest])
    assert suppression.list_bounces(db_engine)[0].bounces == 2
    assert len(suppression.list_events(db_engine, recipient="kunde@nirgendwo.example")) == 2


async def test_original_message_id_is_the_fallback(db_engine: Engine, settings: Settings) -> None:
    with begin_write(db_engine) as conn:
        qid = enqueue(conn, hooks=build_outbound(settings).enqueue_hooks, mail_from="support@example.test",
                      rcpt_to=["kunde@nirgendwo.example"], content=ORIGINAL)
    # A valid bounce address for a message we no longer know: the Message-ID finds it.
    rp = verp.return_path_for(settings, "FFFFFFFF0000000000", "support@example.test")
    dsn = build_dsn(reporting_mta="m.example", original_sender=rp,
                    failures=[DsnFailure("kunde@nirgendwo.example", "5.1.1", "550 nope")],
                    original=ORIGINAL)
    await _spool(db_engine, make_message(rcpt_to=(rp,), content=bytearray(dsn)))
    process_pending(db_engine, [bounce_destination.BounceDestination(settings)])
    [ev] = suppression.list_events(db_engine)
    assert ev.outbound_queue_id == qid


async def test_not_a_report_is_ignored(db_engine: Engine, settings: Settings) -> None:
    rp = verp.return_path_for(settings, "0AB1", "support@example.test")
    await _spool(db_engine, make_message(rcpt_to=(rp,)))
    assert process_pending(db_engine, [AddressInbox(), bounce_destination.BounceDestination(settings)]) == 1
    assert suppression.list_events(db_engine) == []
