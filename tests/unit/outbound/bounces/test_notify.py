"""VERP return paths, the bounce destination, the suppression list and the DSNs we send,
against real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Engine

from mailcase.config import Settings
from mailcase.features.recipients import FeatureRecipients
from mailcase.inbound.addressbook import AddressBook
from mailcase.mime import parse_message
from mailcase.outbound.bounces import destination as bounce_destination
from mailcase.outbound.bounces import hook as bounce_hook
from mailcase.outbound.bounces import notify as bounce_notify
from mailcase.outbound.bounces import suppression, verp
from mailcase.outbound.dsn import DsnFailure, build_dsn
from mailcase.outbound.models import outbound_contents, outbound_messages, outbound_recipients
from mailcase.outbound.queue.enqueue import enqueue
from mailcase.pipeline.worker import AddressInbox, process_pending
from mailcase.platform import build_outbound
from mailcase.policy import Accept, AddressRule, Reject, decide_recipient
from mailcase.policy.recipients import AddressRules, verp_address, verp_queue_id
from mailcase.storage import emaillog
from mailcase.storage.db import begin_write
from mailcase.storage.spool import Spool
from tests.unit.storage.helpers import accepted_reply, make_message

KEY = b"k" * 32
ORIGINAL = (
    b"From: Support <support@example.test>\r\n"
    b"To: kunde@nirgendwo.example\r\n"
    b"Subject: Ihre Anfrage\r\n"
    b"Message-ID: <orig-1@example.test>\r\n"
    b"\r\n"
    b"Hallo.\r\n"
)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Iterator[Settings]:
    s = Settings.model_validate({
        "data_dir": str(tmp_path / "data"),
        "database": {"url": db_url},
        "server": {"hostname": "mx.mailcase.test"},
    })
    yield s


# ---------------------------------------------------------------- VERP, pure


def test_verp_address_round_trips_case_insensitively() -> None:
    a = verp_address(KEY, "0AB12CD34EF5678901", "MX.Mailcase.TEST")
    assert a.startswith("bounce+0ab12cd34ef5678901.") and a.endswith("@mx.mailcase.test")
    assert verp_queue_id(KEY, a) == "0ab12cd34ef5678901"
    assert verp_queue_id(KEY, a.upper()) == "0ab12cd34ef5678901"


def test_forged_or_altered_verp_addresses_are_refused() -> None:
    a = verp_address(KEY, "0AB12CD34EF5678901", "mx.mailcase.test")
    local, _, domain = a.partition("@")
    mac = local.rpartition(".")[2]
    forged = [
        a.replace("0ab12cd34ef5678901", "0ab12cd34ef5678902"),  # another message
        f"{local}@other.test",  # another domain
        a.replace(mac, ("a" if mac[0] != "a" else "b") + mac[1:]),  # altered MAC
        f"bounce+0ab12cd34ef5678901@{domain}",  # no MAC
        f"bounce+.{mac}@{domain}",
        "bounce+@x",
        "support@example.test",
    ]
    for f in forged:
        assert verp_queue_id(KEY, f) is None, f
    assert verp_queue_id(b"another key" * 3, a) is None
    rules = AddressRules({"support@example.test": AddressRule("support@example.test")}, KEY)
    domains = frozenset({"example.test"})
    assert isinstance(decide_recipient(a, rules, domains, tls_active=False), Accept)
    for f in forged[:-1]:
        v = decide_recipient(f, rules, domains, tls_active=False)
        assert isinstance(v, Reject) and v.reply.code == 550, f
    # Without a key, no bounce address at all.
    v = decide_recipient(a, AddressRules({}, None), domains, tls_active=False)
    assert isinstance(v, Reject)
    with pytest.raises(ValueError):
        verp_address(KEY, "bad id!", "mx.mailcase.test")


# ---------------------------------------------------------------- with a database


def test_return_path_is_accepted_by_the_address_book(db_engine: Engine, settings: Settings) -> None:
    rp = verp.return_path_for(settings, "0AB12CD34EF5678901", "support@example.test")
    assert rp.startswith("bounce+0ab12cd34ef5678901.") and rp.endswith("@mx.mailcase.test")
    assert verp.return_path_for(settings, "0AB12CD34EF5678901", "") == ""
    off = settings.model_copy(deep=True)
    off.dkim.verp = False
    assert verp.return_path_for(off, "0AB12CD34EF5678901", "a@b.test") == "a@b.test"
    other = settings.model_copy(deep=True)
    other.dkim.bounce_domain = "Bounces.Example.TEST"
    assert verp.return_path_for(other, "0AB1", "a@b.test").endswith("@bounces.example.test")

    book = AddressBook(db_engine, policy=FeatureRecipients())
    book.reload()
    assert isinstance(decide_recipient(rp, book.rules, book.local_domains, tls_active=False),
                      Accept)
    bad = rp.replace("0ab12cd34ef5678901", "0ab12cd34ef5678900")
    assert isinstance(decide_recipient(bad, book.rules, book.local_domains, tls_active=False),
                      Reject)


def test_suppression_list_on_both_engines(db_engine: Engine) -> None:
    with begin_write(db_engine) as conn:
        assert not suppression.is_suppressed(conn, "Kunde@Nirgendwo.example")
        suppression.suppress(conn, "<Kunde@Nirgendwo.example>", status="5.1.1", reason="unknown",
                         queue_id="Q1")
        suppression.suppress(conn, "kunde@nirgendwo.example", status="5.1.2", reason="again",
                         queue_id="Q2")
    with db_engine.connect() as conn:
        assert suppression.is_suppressed(conn, "KUNDE@nirgendwo.example")
        assert suppression.suppressed_among(conn, ["a@b.test", "kunde@NIRGENDWO.example"]) == {
            "kunde@nirgendwo.example"}
    [rec] = suppression.list_bounces(db_engine)
    assert (rec.address, rec.status, rec.bounces, rec.queue_id) == (
        "kunde@nirgendwo.example", "5.1.2", 2, "Q2")
    # One report recorded once, however often it is processed.
    with begin_write(db_engine) as conn:
        assert suppression.record_bounce(conn, source="dsn:Q9", recipient="x@y.test",
                                     status="5.1.1") == "hard"
        assert suppression.record_bounce(conn, source="dsn:Q9", recipient="X@y.test",
                                     status="5.1.1") is None
        assert suppression.record_bounce(conn, source="dsn:Q9", recipient="z@y.test",
                                     status="2.0.0", action="delivered") is None
    assert [e.recipient for e in suppression.list_events(db_engine)] == ["x@y.test"]
    assert suppression.clear(db_engine, "x@y.test")
    assert suppression.clear(db_engine, "Kunde@nirgendwo.example")
    assert not suppression.clear(db_engine, "kunde@nirgendwo.example")
    assert suppression.list_bounces(db_engine) == []


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


@given(st.text(max_size=200))
@hsettings(max_examples=300, deadline=None)
def test_verp_check_never_raises_and_never_accepts_noise(text: str) -> None:
    assert verp_queue_id(KEY, text) is None
    assert verp_queue_id(KEY, "bounce+" + text) is None
    rules = AddressRules({}, KEY)
    assert rules.get(text.lower()) is None and ("bounce+" + text).lower() not in rules


def test_verp_key_is_made_once_when_missing(db_engine: Engine) -> None:
    from mailcase.outbound.bounces.models import verp_keys

    with begin_write(db_engine) as conn:
        made_by_migration = verp.load_verp_key(conn)
        assert made_by_migration is not None and len(made_by_migration) == 32
        conn.execute(verp_keys.delete())
    assert verp.load_verp_key(db_engine) is None
    with begin_write(db_engine) as conn:
        first = verp.ensure_verp_key(conn)
    with begin_write(db_engine) as conn:
        assert verp.ensure_verp_key(conn) == first != made_by_migration
