"""The DSNs we send on permanent failure, against real databases."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine

from mailcase.config import Settings
from mailcase.mime import parse_message
from mailcase.outbound.bounces import notify as bounce_notify
from mailcase.outbound.bounces import suppression
from mailcase.outbound.dsn import DsnFailure, build_dsn
from mailcase.outbound.models import outbound_contents, outbound_messages, outbound_recipients
from mailcase.outbound.queue.enqueue import enqueue
from mailcase.platform import build_outbound
from mailcase.storage.db import begin_write
from tests.unit.outbound.bounces.helpers import ORIGINAL


def _dsns(engine: Engine) -> list[tuple[str, str, bytes, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(outbound_messages.c.mail_from, outbound_messages.c.category,
                   outbound_contents.c.content, outbound_messages.c.source)
            .join(outbound_contents, outbound_contents.c.message_pk == outbound_messages.c.id)
            .where(outbound_messages.c.source.like("dsn%"))
        ).all()
    return [(r[0], r[1], bytes(r[2]), r[3]) for r in rows]


def _message_row(engine: Engine, qid: str) -> dict[str, object]:
    """What the delivery engine passes: the outbound_messages row as a dict."""
    with engine.connect() as conn:
        return dict(conn.execute(select(outbound_messages).where(
            outbound_messages.c.queue_id == qid)).one()._mapping)


class _Reply:
    code = 550
    enhanced = "5.1.1"
    text = "User unknown"


def test_permanent_failure_sends_one_dsn_to_the_sender(db_engine: Engine, settings: Settings) -> None:
    with begin_write(db_engine) as conn:
        qid = enqueue(conn, hooks=build_outbound(settings).enqueue_hooks, mail_from="support@example.test",
                      rcpt_to=["kunde@nirgendwo.example"], content=ORIGINAL)
    row = _message_row(db_engine, qid)
    # The engine's call: one dict per recipient (address, stage, code, reply), last reply text.
    rcpts = [{"address": "kunde@nirgendwo.example", "stage": "rcpt", "code": 550,
              "reply": "5.1.1 <kunde@nirgendwo.example>: User unknown"}]
    with begin_write(db_engine) as conn:
        bounce_notify.on_permanent_failure(conn, settings, row, rcpts, rcpts[0]["reply"])
    [(mail_from, category, content, source)] = _dsns(db_engine)
    assert (mail_from, category, source) == ("", "system", f"dsn:{qid}")
    report = parse_message(content).delivery_report
    assert report is not None and report.original_message_id == "<orig-1@example.test>"
    [rec] = report.recipients
    assert (rec.final_recipient, rec.status) == ("kunde@nirgendwo.example", "5.1.1")
    assert rec.diagnostic_code is not None
    assert "550 5.1.1 <kunde@nirgendwo.example>: User unknown" in rec.diagnostic_code
    # The remote's 5xx is a hard bounce: the address is suppressed.
    with db_engine.connect() as conn:
        assert suppression.is_suppressed(conn, "kunde@nirgendwo.example")

    # The DSN itself failing permanently (mail_from ""): no DSN about a DSN.
    dsn_qid = next(iter(_dsn_ids(db_engine)))
    with begin_write(db_engine) as conn:
        bounce_notify.on_permanent_failure(conn, settings, _message_row(db_engine, dsn_qid),
                                           ["support@example.test"], _Reply())
    assert suppression.list_events(db_engine, recipient="support@example.test")[0].status == "5.1.1"
    assert len(_dsns(db_engine)) == 1


def _dsn_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(outbound_messages.c.queue_id).where(
            outbound_messages.c.source.like("dsn%"))).scalars())


def test_no_dsn_to_a_null_sender_or_about_a_report(db_engine: Engine, settings: Settings) -> None:
    report = build_dsn(reporting_mta="x.test", original_sender="a@b.test",
                       failures=[DsnFailure("c@d.test")], original=ORIGINAL)
    with begin_write(db_engine) as conn:
        null = enqueue(conn, hooks=build_outbound(settings).enqueue_hooks, mail_from="", rcpt_to=["kunde@nirgendwo.example"], content=ORIGINAL)
        rep = enqueue(conn, hooks=build_outbound(settings).enqueue_hooks, mail_from="someone@example.test", rcpt_to=["c@d.test"],
                      content=report)
    for qid in (null, rep):
        with begin_write(db_engine) as conn:
            bounce_notify.on_permanent_failure(conn, settings, _message_row(db_engine, qid),
                                               ["kunde@nirgendwo.example"], "expired after 24 h")
    assert _dsns(db_engine) == []
    # A local failure (no remote 5xx) does not suppress the address.
    with db_engine.connect() as conn:
        assert not suppression.is_suppressed(conn, "kunde@nirgendwo.example")


def test_queue_time_running_out_reports_the_transient_status(
    db_engine: Engine, settings: Settings
) -> None:
    with begin_write(db_engine) as conn:
        qid = enqueue(conn, hooks=build_outbound(settings).enqueue_hooks, mail_from="support@example.test",
                      rcpt_to=["kunde@nirgendwo.example"], content=ORIGINAL)
    rcpts = [{"address": "kunde@nirgendwo.example", "stage": "rcpt", "code": 451,
              "reply": "4.7.1 greylisted, try later"}]
    with begin_write(db_engine) as conn:
        bounce_notify.on_permanent_failure(conn, settings, _message_row(db_engine, qid), rcpts,
                                           "4.7.1 greylisted, try later")
    [(_, _, content, _)] = _dsns(db_engine)
    [rec] = parse_message(content).delivery_report.recipients  # type: ignore[union-attr]
    assert (rec.action, rec.status) == ("failed", "4.7.1")
    with db_engine.connect() as conn:
        assert not suppression.is_suppressed(conn, "kunde@nirgendwo.example")


def test_failed_compliance_copy_is_neither_reported_to_the_sender_nor_suppressed(
    db_engine: Engine, settings: Settings
) -> None:
    settings.dkim.compliance_bcc = ["archive@example.test"]
    with begin_write(db_engine) as conn:
        suppression.suppress(conn, "archive@example.test", status="5.2.2", reason="full (by hand)")
        qid = enqueue(conn, hooks=build_outbound(settings).enqueue_hooks, mail_from="support@example.test",
                      rcpt_to=["kunde@nirgendwo.example"], content=ORIGINAL)
    with db_engine.connect() as conn:
        states = dict(conn.execute(
            select(outbound_recipients.c.address, outbound_recipients.c.state)
            .join(outbound_messages, outbound_messages.c.id == outbound_recipients.c.message_pk)
            .where(outbound_messages.c.queue_id == qid)).all())
    assert states == {"kunde@nirgendwo.example": "queued", "archive@example.test": "queued"}
    suppression.clear(db_engine, "archive@example.test")
    rcpts = [{"address": "archive@example.test", "stage": "data", "code": 552,
              "reply": "5.2.2 mailbox full"}]
    with begin_write(db_engine) as conn:
        bounce_notify.on_permanent_failure(conn, settings, _message_row(db_engine, qid), rcpts,
                                           "5.2.2 mailbox full")
    assert _dsns(db_engine) == []
    assert suppression.list_bounces(db_engine) == []
    # The real recipient failing still gets its DSN, without naming the archive.
    rcpts = [{"address": "kunde@nirgendwo.example", "stage": "rcpt", "code": 550,
              "reply": "5.1.1 unknown"}]
    with begin_write(db_engine) as conn:
        bounce_notify.on_permanent_failure(conn, settings, _message_row(db_engine, qid), rcpts,
                                           "5.1.1 unknown")
    [(_, _, content, _)] = _dsns(db_engine)
    assert b"archive" not in content.split(b"Content-Type: text/rfc822-headers")[0]


def test_a_failing_dsn_never_breaks_the_callers_transaction(
    db_engine: Engine, settings: Settings
) -> None:
    with begin_write(db_engine) as conn:
        qid = enqueue(conn, hooks=build_outbound(settings).enqueue_hooks, mail_from="support@example.test",
                      rcpt_to=["kunde@nirgendwo.example"], content=ORIGINAL)
    row = _message_row(db_engine, qid)
    row["mail_from"] = "not an address"  # enqueue of the DSN refuses it
    with begin_write(db_engine) as conn:
        bounce_notify.on_permanent_failure(conn, settings, row, [
            {"address": "kunde@nirgendwo.example", "code": 550, "reply": "5.1.1 unknown"}],
            "5.1.1 unknown")
        suppression.suppress(conn, "after@example.test", status="5.1.1", reason="still usable")
    assert _dsns(db_engine) == []
    # The bounce is still recorded; only the DSN was given up; the transaction committed.
    assert sorted(b.address for b in suppression.list_bounces(db_engine)) == [
        "after@example.test", "kunde@nirgendwo.example"]


def test_a_bounce_of_our_own_bounce_never_suppresses(db_engine: Engine, settings: Settings) -> None:
    """Issue 12.2: a DSN to agent@ (one of our users) that itself bounced must not put agent@
    on the suppression list, and no DSN is sent about that DSN (RFC 5321 §6.1, RFC 3461 §6.2:
    a message with a null reverse-path gets no notification)."""
    with begin_write(db_engine) as conn:
        qid = enqueue(conn, hooks=build_outbound(settings).enqueue_hooks,
                      mail_from="agent@example.test", rcpt_to=["kunde@nirgendwo.example"],
                      content=ORIGINAL)
    rcpts = [{"address": "kunde@nirgendwo.example", "code": 550, "reply": "5.1.1 unknown"}]
    with begin_write(db_engine) as conn:
        bounce_notify.on_permanent_failure(conn, settings, _message_row(db_engine, qid), rcpts,
                                           "5.1.1 unknown")
    [dsn_qid] = _dsn_ids(db_engine)
    # The DSN to agent@ is refused with a 5xx by agent@'s own mail server.
    rcpts = [{"address": "agent@example.test", "code": 550, "reply": "5.7.1 relay denied"}]
    with begin_write(db_engine) as conn:
        bounce_notify.on_permanent_failure(conn, settings, _message_row(db_engine, dsn_qid),
                                           rcpts, "5.7.1 relay denied")
    assert [b.address for b in suppression.list_bounces(db_engine)] == ["kunde@nirgendwo.example"]
    [event] = suppression.list_events(db_engine, recipient="agent@example.test")
    assert event.status == "5.7.1"  # recorded, for the operator to see, not suppressed
    assert len(_dsns(db_engine)) == 1  # no DSN about the DSN
    with db_engine.connect() as conn:
        assert not suppression.is_suppressed(conn, "agent@example.test")


def test_a_report_sent_with_a_sender_also_never_suppresses(
    db_engine: Engine, settings: Settings
) -> None:
    """A DSN or a bounce notice with a non-null sender (as some gateways send them) is a
    bounce all the same: its failure suppresses nobody."""
    report = build_dsn(reporting_mta="x.test", original_sender="agent@example.test",
                       failures=[DsnFailure("c@d.test")], original=ORIGINAL)
    with begin_write(db_engine) as conn:
        rep = enqueue(conn, hooks=build_outbound(settings).enqueue_hooks,
                      mail_from="mailer-daemon@mx.mailcase.test", rcpt_to=["agent@example.test"],
                      content=report)
    with begin_write(db_engine) as conn:
        bounce_notify.on_permanent_failure(conn, settings, _message_row(db_engine, rep), [
            {"address": "agent@example.test", "code": 550, "reply": "5.1.1 unknown"}],
            "5.1.1 unknown")
    assert suppression.list_bounces(db_engine) == []
    assert _dsns(db_engine) == []


def test_our_own_receiving_addresses_are_never_suppressed(
    db_engine: Engine, settings: Settings
) -> None:
    """Mail to one of our own receiving (or routing) addresses that a remote refused, e.g.
    through a relay: recorded, never suppressed, or every case reply from it would stop."""
    from mailcase.storage import addresses

    addresses.add(db_engine, "support@example.test")
    with begin_write(db_engine) as conn:
        qid = enqueue(conn, hooks=build_outbound(settings).enqueue_hooks,
                      mail_from="agent@else.test",
                      rcpt_to=["Support@Example.test", "postmaster@mx.mailcase.test"],
                      content=ORIGINAL)
    rcpts = [{"address": a, "code": 550, "reply": "5.1.1 unknown"}
             for a in ("Support@Example.test", "postmaster@mx.mailcase.test")]
    with begin_write(db_engine) as conn:
        bounce_notify.on_permanent_failure(conn, settings, _message_row(db_engine, qid), rcpts,
                                           "5.1.1 unknown")
    assert suppression.list_bounces(db_engine) == []
    assert {e.recipient for e in suppression.list_events(db_engine)} == {
        "support@example.test", "postmaster@mx.mailcase.test"}
    assert len(_dsns(db_engine)) == 1  # the sender is still told
