"""Email-to-Case through the real pipeline on SQLite and PostgreSQL: cases, threading,
dedupe, policies, refusals, attachments, concurrent case numbers."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from mailcase.features.cases.models import attachment_blobs, case_attachments, cases
from mailcase.features.cases.store import cases as case_store
from mailcase.features.cases.store import contacts as contact_store
from mailcase.features.cases.store import emails as email_store
from mailcase.features.cases.store import routing as routing_store
from mailcase.features.cases.threadtoken import make_token
from mailcase.secrets import server_secret
from mailcase.storage import emaillog, messages
from mailcase.storage.db import begin_write
from tests.unit.features.cases.helpers import deliver, eml, settings


def _only_case(engine: Engine) -> case_store.CaseRecord:
    got = case_store.list_cases(engine)
    assert len(got) == 1, got
    return got[0]


async def test_new_case_fields_and_plain_address_untouched(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    routing_store.add_routing(db_engine, "Support@Ours.test", name="Support", priority="High", owner="alice")
    await deliver(db_engine, s, eml(body="It is burning.\r\nSend help.\r\n"), rcpt_to=("other@ours.test",))
    assert case_store.list_cases(db_engine) == []
    await deliver(db_engine, s, eml(cc="Bob <bob@customer.test>", body="It is burning.\r\n"))
    case = _only_case(db_engine)
    assert case.number == "00000001"
    assert (case.subject, case.status, case.priority, case.origin) == ("Printer on fire", "New", "High", "Email")
    assert case.description == "It is burning.\n"
    assert (case.supplied_name, case.supplied_email, case.contact_id) == ("Ann Customer", "ann@customer.test", None)
    assert (case.owner, case.routing_address) == ("alice", "support@ours.test")
    emails = email_store.list_emails(db_engine, "00000001")
    assert emails is not None and len(emails) == 1
    e = emails[0]
    assert e.direction == "inbound" and e.from_address == "ann@customer.test"
    assert e.to == [{"address": "support@ours.test", "name": ""}]
    assert e.cc == [{"address": "bob@customer.test", "name": "Bob"}]
    assert e.tls_version == "TLSv1.3" and e.mail_from == "ann@customer.test"
    assert e.headers is None  # save_headers is off
    assert e.message_id and e.message_id.startswith("<m")
    log = emaillog.query(db_engine, outcome="processed")
    assert any("case 00000001 created" in (r["reason"] or "") for r in log)


async def test_contact_matched_and_headers_saved(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    routing_store.add_routing(db_engine, "support@ours.test", save_headers=True)
    contact = contact_store.add_contact(db_engine, "Ann@Customer.test", "Ann Known")
    await deliver(db_engine, s, eml())
    case = _only_case(db_engine)
    assert (case.contact_id, case.contact_email, case.contact_name) == (contact.id, "ann@customer.test", "Ann Known")
    emails = email_store.list_emails(db_engine, case.number) or []
    assert emails[0].headers is not None
    assert ["Subject", "Printer on fire"] in emails[0].headers


async def test_threading_by_message_id_token_and_forged_token(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    routing_store.add_routing(db_engine, "support@ours.test")
    await deliver(db_engine, s, eml(message_id="<first@customer.test>"))
    first = _only_case(db_engine)
    # 1. In-Reply-To, subject with tags.
    await deliver(db_engine, s, eml(subject="RE: AW: [External] whatever", in_reply_to="<first@customer.test>",
                                    message_id="<second@customer.test>"))
    # 2. Only References, pointing at the second message.
    await deliver(db_engine, s, eml(subject="new subject", references="<unknown@x.test> <second@customer.test>"))
    # 3. Only the token, in the body, subject changed.
    token = make_token(server_secret(s), first.id)
    await deliver(db_engine, s, eml(subject="totally different", body=f"see below\r\n[ {token} ]\r\n"))
    assert len(case_store.list_cases(db_engine)) == 1
    assert case_store.get_case(db_engine, first.number).email_count == 4  # type: ignore[union-attr]
    # 4. A forged token: another secret -> ignored, a new case.
    forged = make_token(b"x" * 32, first.id)
    await deliver(db_engine, s, eml(subject=f"Re: Printer [ {forged} ]"))
    assert len(case_store.list_cases(db_engine)) == 2
    newest = case_store.list_cases(db_engine)[0]
    assert newest.number == "00000002"
    log = emaillog.query(db_engine, outcome="processed")
    assert any("ignored forged token" in (r["reason"] or "") for r in log)


async def test_same_message_twice_makes_one_case(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    routing_store.add_routing(db_engine, "support@ours.test")
    routing_store.add_routing(db_engine, "help@ours.test")
    content = eml(message_id="<dup@customer.test>", to="support@ours.test, help@ours.test")
    await deliver(db_engine, s, content, rcpt_to=("help@ours.test", "support@ours.test"))
    # The same message delivered again (a retry by the sender's MTA: new Received header).
    again = content.replace(b"Received: from client.customer.test", b"Received: from relay2.customer.test")
    await deliver(db_engine, s, again, rcpt_to=("support@ours.test",))
    case = _only_case(db_engine)
    assert case.email_count == 0 or case_store.get_case(db_engine, case.number).email_count == 1  # type: ignore[union-attr]
    assert case.routing_address == "help@ours.test"  # the first routing recipient
    log = emaillog.query(db_engine, outcome="processed")
    assert any("duplicate of a message already on case 00000001" in (r["reason"] or "") for r in log)
    assert {m.state for m in messages.list_messages(db_engine)} == {"processed"}


@pytest.mark.parametrize(("policy", "cases_after", "flag"), [("attach_flagged", 1, True), ("attach", 1, False), ("new_case", 2, False)])
async def test_sender_not_on_thread(db_engine: Engine, tmp_path: Path, policy: str, cases_after: int, flag: bool) -> None:
    s = settings(tmp_path, sender_not_on_thread=policy)
    routing_store.add_routing(db_engine, "support@ours.test")
    await deliver(db_engine, s, eml(message_id="<t1@customer.test>", cc="carol@customer.test"))
    # Carol was on Cc: on the thread.
    await deliver(db_engine, s, eml(from_="carol@customer.test", in_reply_to="<t1@customer.test>"), mail_from="carol@customer.test")
    await deliver(db_engine, s, eml(from_="mallory@evil.test", in_reply_to="<t1@customer.test>"), mail_from="mallory@evil.test")
    assert len(case_store.list_cases(db_engine)) == cases_after
    emails = email_store.list_emails(db_engine, "00000001") or []
    flags = [(e.from_address, e.sender_not_on_thread) for e in emails]
    expected = [("ann@customer.test", False), ("carol@customer.test", False)]
    if cases_after == 1:
        expected.append(("mallory@evil.test", flag))
    assert flags == expected


@pytest.mark.parametrize(("policy", "status", "cases_after"), [("reopen", "Working", 1), ("attach", "Closed", 1), ("new_linked_case", "Closed", 2)])
async def test_reply_to_closed_case(db_engine: Engine, tmp_path: Path, policy: str, status: str, cases_after: int) -> None:
    s = settings(tmp_path, closed_case_reply=policy)
    routing_store.add_routing(db_engine, "support@ours.test")
    await deliver(db_engine, s, eml(message_id="<c1@customer.test>"))
    assert case_store.update_case(db_engine, "00000001", status="closed") is not None
    closed = case_store.get_case(db_engine, 1)
    assert closed is not None and closed.closed_at is not None
    await deliver(db_engine, s, eml(in_reply_to="<c1@customer.test>", subject="Re: Printer on fire"))
    first = case_store.get_case(db_engine, 1)
    assert first is not None and first.status == status
    assert len(case_store.list_cases(db_engine)) == cases_after
    if cases_after == 2:
        linked = case_store.get_case(db_engine, 2)
        assert linked is not None and linked.parent_number == "00000001"
    if status == "Working":
        assert first.closed_at is None


async def test_accept_from_refuses_and_logs(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    routing_store.add_routing(db_engine, "support@ours.test", accept_from=["customer.test"])
    await deliver(db_engine, s, eml(from_="stranger@elsewhere.test"), mail_from="stranger@elsewhere.test")
    assert case_store.list_cases(db_engine) == []
    refused = [r for r in emaillog.query(db_engine) if "not in accept-from list" in (r["reason"] or "")]
    assert refused and refused[0]["outcome"] in ("discarded", "bounced")
    # The raw message is kept.
    (m,) = messages.list_messages(db_engine)
    assert m.state == "processed" and messages.get_message(db_engine, m.queue_id).content  # type: ignore[union-attr]
    await deliver(db_engine, s, eml())
    assert len(case_store.list_cases(db_engine)) == 1


async def test_attachments_stored_once(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    routing_store.add_routing(db_engine, "support@ours.test")
    multipart = (
        'Content-Type: multipart/mixed; boundary="b"'
    )
    body = (
        "--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        "--b\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Disposition: attachment; filename=\"r.pdf\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IK\r\n--b--\r\n"
    )
    await deliver(db_engine, s, eml(extra=multipart, body=body))
    await deliver(db_engine, s, eml(extra=multipart, body=body, subject="again"))
    with db_engine.connect() as c:
        assert c.execute(select(func.count()).select_from(attachment_blobs)).scalar_one() == 1
        assert c.execute(select(func.count()).select_from(case_attachments)).scalar_one() == 2
    emails = email_store.list_emails(db_engine, 2) or []
    (att,) = emails[0].attachments
    assert (att.filename, att.content_type, att.size) == ("r.pdf", "application/pdf", 15)
    got = email_store.get_attachment(db_engine, 2, att.id)
    assert got is not None and got[1].startswith(b"%PDF-1.4")
    assert email_store.get_attachment(db_engine, 1, att.id) is None  # not an attachment of case 1


def test_case_numbers_concurrent_and_gapless(db_engine: Engine) -> None:
    numbers: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                with begin_write(db_engine) as conn:
                    _, n = case_store.create_case(
                        conn, subject="s", description="d", priority="Medium", origin="Email",
                        contact_id=None, supplied_name="", supplied_email="", owner=None,
                        queue=None, routing_address_id=None,
                    )
                with lock:
                    numbers.append(n)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(numbers) == list(range(1, 41))
    with db_engine.connect() as c:
        assert c.execute(select(func.count(func.distinct(cases.c.number)))).scalar_one() == 40


def test_routing_crud_links_receiving_address(db_engine: Engine) -> None:
    from mailcase.storage import addresses

    r = routing_store.add_routing(db_engine, "support@ours.test", require_tls=True, accept_from=["@Customer.test"],
                                  require_authenticated_sender=True, task_status="Not Started")
    assert r.require_tls and r.accept_from == ("customer.test",) and r.require_authenticated_sender
    rec = addresses.get(db_engine, "support@ours.test")
    assert rec is not None and rec.require_tls and rec.enabled
    with pytest.raises(Exception, match="already exists"):
        routing_store.add_routing(db_engine, "support@ours.test")
    with pytest.raises(ValueError):
        routing_store.add_routing(db_engine, "x@ours.test", priority="whenever")
    off = routing_store.update_routing(db_engine, "support@ours.test", enabled=False)
    assert off is not None and not off.enabled
    assert addresses.get(db_engine, "support@ours.test").enabled is False  # type: ignore[union-attr]
    assert routing_store.delete_routing(db_engine, "support@ours.test")
    assert addresses.get(db_engine, "support@ours.test") is None
    assert routing_store.list_routing(db_engine) == []


async def test_one_email_log_row_per_event(db_engine: Engine, tmp_path: Path) -> None:
    """Issue 12.9: a message that made a case has one row saying so, not also a blank
    "processed" row; a message to a plain receiving address keeps its one "processed" row;
    a message discarded by the sender check is "discarded", not "rejected" (no SMTP refusal)."""
    s = settings(tmp_path)
    s.automation.unauthorized_action = "discard"
    routing_store.add_routing(db_engine, "support@ours.test")
    routing_store.add_routing(db_engine, "vip@ours.test", accept_from=["customer.test"])
    for mid, rcpt, sender in (("<case@customer.test>", "support@ours.test", "ann@customer.test"),
                              ("<plain@customer.test>", "other@ours.test", "ann@customer.test"),
                              ("<odd@elsewhere.test>", "vip@ours.test", "x@elsewhere.test")):
        await deliver(db_engine, s, eml(message_id=mid, from_=sender), rcpt_to=(rcpt,),
                      mail_from=sender, message_id=mid)
    rows = [r for r in emaillog.query(db_engine) if r["outcome"] != "accepted"]
    by_mid: dict[str, list[tuple[str, str | None]]] = {}
    for r in rows:
        by_mid.setdefault(r["message_id"], []).append((r["outcome"], r["reason"]))
    [(outcome, reason)] = by_mid["<case@customer.test>"]
    assert outcome == "processed" and reason is not None and "case 00000001 created" in reason
    assert by_mid["<plain@customer.test>"] == [("processed", None)]
    [(outcome, reason)] = by_mid["<odd@elsewhere.test>"]
    assert outcome == "discarded" and reason is not None and "accept-from" in reason
