"""admit / on_case_email / on_refused_sender against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mailcase.config import Settings, load_settings
from mailcase.features.cases.automation import service as automation
from mailcase.features.cases.automation.models import automation_daily_counts, automation_sent
from mailcase.features.cases.events import CaseEmailEvent
from mailcase.features.cases.models import case_emails
from mailcase.features.cases.store import cases as case_store
from mailcase.features.cases.store import routing as routing_store
from mailcase.features.cases.store import threads as thread_store
from mailcase.mime import parse_message
from mailcase.outbound.models import outbound_contents, outbound_messages, outbound_recipients
from mailcase.storage.db import begin_write
from mailcase.storage.models import email_log

T0 = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)
ROUTING = "support@example.test"
TOKEN = "thread::b3.k5yq3a2cxwzbjr7d4j6ezp2a::"


def _settings(tmp_path: Path, **automation_cfg: Any) -> Settings:
    return load_settings(
        environ={},
        overrides={
            "data_dir": str(tmp_path),
            "server": {"hostname": "mailcase.example.test"},
            "automation": automation_cfg,
        },
    )


def _raw(
    sender: str = "ada@client.test",
    subject: str = "Printer on fire",
    extra: str = "",
    body: str = "It burns.",
    mid: str = "<m1@client.test>",
) -> bytes:
    return (
        f"From: Ada <{sender}>\r\nTo: {ROUTING}\r\nSubject: {subject}\r\n"
        f"Message-ID: {mid}\r\n{extra}\r\n{body}\r\n"
    ).encode()


@pytest.fixture
def routing(db_engine: Engine) -> Any:
    return routing_store.add_routing(db_engine, ROUTING, name="Support", owner="owner@corp.test")


def _event(
    routing: Any,
    raw: bytes | None = None,
    *,
    mail_from: str = "ada@client.test",
    case: tuple[int, int] | None = None,
    new: bool = True,
) -> CaseEmailEvent:
    email = parse_message(raw or _raw())
    return CaseEmailEvent(
        queue_id="Q1",
        message_pk=999999,
        routing=routing,
        email=email,
        mail_from=mail_from,
        rcpt_to=(ROUTING,),
        contact_email=email.from_address,
        contact_name=email.from_name,
        auth=None,
        case_id=case[0] if case else None,
        case_number=f"{case[1]:08d}" if case else None,
        case_subject=email.subject,
        is_new_case=new,
        thread_token=TOKEN if case else None,
    )


def _case(engine: Engine, routing: Any) -> tuple[int, int]:
    with begin_write(engine) as conn:
        return case_store.create_case(
            conn,
            subject="Printer on fire",
            description="It burns.",
            priority="Medium",
            origin="Email",
            contact_id=None,
            supplied_name="Ada",
            supplied_email="ada@client.test",
            owner=None,
            queue=None,
            routing_address_id=routing.id,
        )


def _outbound(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(outbound_messages, outbound_contents.c.content)
            .join(outbound_contents, outbound_contents.c.message_pk == outbound_messages.c.id)
            .order_by(outbound_messages.c.id)
        ).all()
        out = []
        for r in rows:
            d = dict(r._mapping)
            d["rcpt"] = [
                a
                for (a,) in conn.execute(
                    select(outbound_recipients.c.address).where(
                        outbound_recipients.c.message_pk == r.id
                    )
                )
            ]
            out.append(d)
        return out


def _log(engine: Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [
            (r.direction, r.outcome, r.reason or "")
            for r in conn.execute(select(email_log).order_by(email_log.c.id))
        ]


def _admit(engine: Engine, settings: Settings, event: CaseEmailEvent, now: dt.datetime) -> str:
    with begin_write(engine) as conn:
        return automation.admit(conn, settings, event, now=now).action


# ------------------------------------------------------------------------------ loops
def test_loop_stops_case_creation_for_the_window(
    db_engine: Engine, routing: Any, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, loop_threshold=3, loop_window=60)
    event = _event(routing)
    actions = [_admit(db_engine, settings, event, T0 + dt.timedelta(seconds=i)) for i in range(5)]
    assert actions == ["create", "create", "create", "discard", "discard"]
    # A different body from the same sender is another message: still created.
    other = _event(routing, _raw(body="Now the scanner too."))
    assert _admit(db_engine, settings, other, T0 + dt.timedelta(seconds=6)) == "create"
    # "Re:" and the thread token do not make it a new message.
    again = _event(routing, _raw(subject=f"RE: Printer on fire [ {TOKEN} ]"))
    assert _admit(db_engine, settings, again, T0 + dt.timedelta(seconds=7)) == "discard"
    # After the window has passed without the message, cases are created again.
    assert _admit(db_engine, settings, event, T0 + dt.timedelta(seconds=200)) == "create"
    loops = [e for e in _log(db_engine) if "mail loop" in e[2]]
    assert len(loops) == 3
    assert all(d == "inbound" and o == "discarded" for d, o, _ in loops)


def test_loop_is_per_routing_address(db_engine: Engine, routing: Any, tmp_path: Path) -> None:
    settings = _settings(tmp_path, loop_threshold=1, loop_window=60)
    other = routing_store.add_routing(db_engine, "sales@example.test", name="Sales")
    assert _admit(db_engine, settings, _event(routing), T0) == "create"
    assert _admit(db_engine, settings, _event(other), T0) == "create"
    assert _admit(db_engine, settings, _event(routing), T0) == "discard"


# ------------------------------------------------------------------------ daily limit
@pytest.mark.parametrize("action", ["discard", "requeue", "bounce"])
def test_daily_case_limit(db_engine: Engine, routing: Any, tmp_path: Path, action: str) -> None:
    settings = _settings(tmp_path, daily_case_limit=2, over_limit_action=action)
    results = [
        _admit(db_engine, settings, _event(routing, _raw(subject=f"s{i}")), T0) for i in range(3)
    ]
    assert results == ["create", "create", action]
    # The next day counts from zero.
    assert _admit(db_engine, settings, _event(routing), T0 + dt.timedelta(days=1)) == "create"
    with db_engine.connect() as conn:
        counts = dict(
            conn.execute(
                select(automation_daily_counts.c.day, automation_daily_counts.c.cases)
            ).all()
        )
    assert counts == {"2026-11-26": 2, "2026-11-27": 1}
    entries = [e for e in _log(db_engine) if "daily case limit" in e[2]]
    assert len(entries) == 1
    expected = {"discard": "discarded", "requeue": "deferred", "bounce": "bounced"}[action]
    assert entries[0][1] == expected
    queued = _outbound(db_engine)
    if action == "bounce":
        (notice,) = queued
        assert notice["mail_from"] == "" and notice["rcpt"] == ["ada@client.test"]
        assert notice["category"] == "system"
        assert b"daily case limit" in notice["content"]
        assert b"Auto-Submitted: auto-replied" in notice["content"]
    else:
        assert queued == []


# ------------------------------------------------------------------- refused senders
def test_bounce_never_to_empty_return_path_or_automatic_sender(
    db_engine: Engine, routing: Any, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, unauthorized_action="bounce")
    with begin_write(db_engine) as conn:
        a = automation.on_refused_sender(
            conn, settings, _event(routing, mail_from=""), "not listed", now=T0
        )
        b = automation.on_refused_sender(
            conn,
            settings,
            _event(routing, _raw(extra="Auto-Submitted: auto-replied\r\n")),
            "not listed",
            now=T0,
        )
        c = automation.on_refused_sender(
            conn,
            settings,
            _event(
                routing,
                _raw(sender="mailer-daemon@client.test"),
                mail_from="mailer-daemon@client.test",
            ),
            "x",
            now=T0,
        )
        d = automation.on_refused_sender(conn, settings, _event(routing), "not listed", now=T0)
    assert a.action == b.action == c.action == d.action == "bounce"
    queued = _outbound(db_engine)
    assert [q["rcpt"] for q in queued] == [["ada@client.test"]]
    assert queued[0]["mail_from"] == ""
    assert b"not listed" in queued[0]["content"]
    suppressed = [e for e in _log(db_engine) if "notice suppressed" in e[2]]
    assert len(suppressed) == 3
    assert "empty return path" in suppressed[0][2]


def test_unauthorized_discard_and_requeue(db_engine: Engine, routing: Any, tmp_path: Path) -> None:
    for action, outcome in (("discard", "discarded"), ("requeue", "deferred")):
        settings = _settings(tmp_path, unauthorized_action=action)
        with begin_write(db_engine) as conn:
            result = automation.on_refused_sender(
                conn, settings, _event(routing), "DMARC fail", now=T0
            )
        assert result.action == action
        assert _log(db_engine)[-1][1] == outcome
        assert "DMARC fail" in _log(db_engine)[-1][2]
    assert _outbound(db_engine) == []


# ---------------------------------------------------------------------- auto-responses
def _add_rule(engine: Engine, **kw: Any) -> automation.Rule:  # type: ignore[name-defined]
    fields: dict[str, Any] = {
        "name": "ack",
        "subject_template": "Case {{ case_number }}: {{ subject }}",
        "text_template": "Hello {{ contact_name }}, we opened case {{ case_number }}.",
    }
    fields.update(kw)
    return automation.add_rule(engine, **fields)


def _respond(
    engine: Engine, settings: Settings, event: CaseEmailEvent, now: dt.datetime = T0
) -> None:
    with begin_write(engine) as conn:
        automation.on_case_email(conn, settings, event, now=now)


def test_acknowledgement_queued_threaded_and_indexed(
    db_engine: Engine, routing: Any, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    _add_rule(db_engine, html_template="<p>Hi {{ contact_name }}</p>")
    case = _case(db_engine, routing)
    _respond(db_engine, settings, _event(routing, case=case))
    (ack,) = _outbound(db_engine)
    assert ack["category"] == "auto"
    assert ack["source"] == f"case:{case[1]:08d}"
    assert ack["mail_from"] == "" and ack["rcpt"] == ["ada@client.test"]
    parsed = parse_message(ack["content"])
    assert parsed.subject == f"Case {case[1]:08d}: Printer on fire [ {TOKEN} ]"
    assert f"we opened case {case[1]:08d}" in parsed.text_body
    assert TOKEN in parsed.text_body
    assert parsed.header("Auto-Submitted") == "auto-replied"
    assert parsed.in_reply_to == "<m1@client.test>"
    assert parsed.references == ("<m1@client.test>",)
    assert parsed.from_address == ROUTING
    assert "Hi Ada" in parsed.html_body
    assert ack["message_id"] == parsed.message_id
    # The acknowledgement is on the case and its Message-ID threads a reply to it.
    with db_engine.connect() as conn:
        assert thread_store.case_ids_for_message_ids(conn, [parsed.message_id or ""]) == {
            parsed.message_id: case[0]
        }
        row = conn.execute(select(case_emails).where(case_emails.c.direction == "outbound")).one()
    assert row.outbound_queue_id == ack["queue_id"] and row.case_id == case[0]


def test_no_response_without_rule_or_for_existing_case(
    db_engine: Engine, routing: Any, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    case = _case(db_engine, routing)
    _respond(db_engine, settings, _event(routing, case=case))
    assert _outbound(db_engine) == []
    _add_rule(db_engine)
    _respond(db_engine, settings, _event(routing, case=case, new=False))
    assert _outbound(db_engine) == []
    _add_rule(db_engine, name="only-sales", routing_address="sales@example.test", position=1)
    _respond(db_engine, settings, _event(routing, case=case))
    (ack,) = _outbound(db_engine)
    assert b"we opened case" in ack["content"]  # the first rule that matches, not "only-sales"


@pytest.mark.parametrize(
    ("extra", "mail_from", "sender", "why"),
    [
        ("Auto-Submitted: auto-replied\r\n", "ada@client.test", "ada@client.test", "automatic"),
        ("Precedence: bulk\r\n", "ada@client.test", "ada@client.test", "precedence"),
        ("List-Id: <l.client.test>\r\n", "ada@client.test", "ada@client.test", "list-id"),
        ("", "", "ada@client.test", "empty return path"),
        ("", "noreply@client.test", "noreply@client.test", "noreply"),
        ("", "sales@example.test", "sales@example.test", "own"),
        ("", "x@mailcase.example.test", "x@mailcase.example.test", "own"),
    ],
)
def test_never_respond(
    db_engine: Engine,
    routing: Any,
    tmp_path: Path,
    extra: str,
    mail_from: str,
    sender: str,
    why: str,
) -> None:
    settings = _settings(tmp_path)
    routing_store.add_routing(db_engine, "sales@example.test", name="Sales")
    _add_rule(db_engine)
    case = _case(db_engine, routing)
    _respond(
        db_engine,
        settings,
        _event(routing, _raw(sender=sender, extra=extra), mail_from=mail_from, case=case),
    )
    assert _outbound(db_engine) == []
    (entry,) = [e for e in _log(db_engine) if "auto-response suppressed" in e[2]]
    assert entry[0] == "outbound" and entry[1] == "suppressed"
    assert why in entry[2]


def test_per_sender_limit(db_engine: Engine, routing: Any, tmp_path: Path) -> None:
    settings = _settings(tmp_path, auto_response_limit=3, auto_response_period=3600)
    _add_rule(db_engine)
    for i in range(5):
        case = _case(db_engine, routing)
        _respond(db_engine, settings, _event(routing, case=case), T0 + dt.timedelta(minutes=i))
    assert len(_outbound(db_engine)) == 3
    limited = [e for e in _log(db_engine) if "per-sender limit" in e[2]]
    assert len(limited) == 2
    # Another sender is not limited by Ada's count.
    case = _case(db_engine, routing)
    _respond(
        db_engine,
        settings,
        _event(routing, _raw(sender="bob@client.test"), mail_from="bob@client.test", case=case),
        T0,
    )
    assert len(_outbound(db_engine)) == 4
    # Once the period has passed, Ada gets one again.
    case = _case(db_engine, routing)
    _respond(db_engine, settings, _event(routing, case=case), T0 + dt.timedelta(hours=2))
    assert len(_outbound(db_engine)) == 5
    with db_engine.connect() as conn:
        kinds = conn.execute(select(automation_sent.c.kind)).scalars().all()
    assert kinds == ["auto-reply"] * 5


# ----------------------------------------------------------------------- notifications
def test_notify_owner_per_address_or_global(
    db_engine: Engine, routing: Any, tmp_path: Path
) -> None:
    case = _case(db_engine, routing)
    event = _event(routing, case=case, new=False)
    _respond(db_engine, _settings(tmp_path), event)
    assert _outbound(db_engine) == []
    _respond(db_engine, _settings(tmp_path, notify_owner=True), event)
    (note,) = _outbound(db_engine)
    assert note["rcpt"] == ["owner@corp.test"] and note["category"] == "system"
    parsed = parse_message(note["content"])
    assert parsed.subject == f"[Case {case[1]:08d}] New email on case: Printer on fire"
    assert parsed.header("Auto-Submitted") == "auto-generated"
    # Per-address switch overrides the global one, both ways.
    automation.set_notify_owner(db_engine, ROUTING, False)
    _respond(db_engine, _settings(tmp_path, notify_owner=True), event)
    assert len(_outbound(db_engine)) == 1
    automation.set_notify_owner(db_engine, ROUTING, True)
    _respond(db_engine, _settings(tmp_path), event)
    assert len(_outbound(db_engine)) == 2
    assert automation.address_settings(db_engine) == [(ROUTING, True)]


def test_notify_switch_only_for_a_routing_address(db_engine: Engine, routing: Any) -> None:
    """Issue 12.7: a switch for an address that makes no cases is refused, not stored."""
    for address in ("nobody@example.test", "bounce+x@example.test"):
        with pytest.raises(automation.RuleError, match="is not a routing address"):
            automation.set_notify_owner(db_engine, address, True)
    automation.set_notify_owner(db_engine, ROUTING.upper(), False)  # case does not matter
    automation.set_notify_owner(db_engine, "nobody@example.test", None)  # clearing: fine
    assert automation.address_settings(db_engine) == [(ROUTING, False)]


def test_notify_owner_never_to_our_own_address(db_engine: Engine, tmp_path: Path) -> None:
    looped = routing_store.add_routing(db_engine, ROUTING, name="Support", owner="sales@example.test")
    routing_store.add_routing(db_engine, "sales@example.test", name="Sales")
    case = _case(db_engine, looped)
    _respond(db_engine, _settings(tmp_path, notify_owner=True), _event(looped, case=case))
    assert _outbound(db_engine) == []


# -------------------------------------------------------------------------- rules CRUD
def test_rules_crud(db_engine: Engine) -> None:
    a = _add_rule(db_engine, name="a", sender_domain="@VIP.test")
    b = _add_rule(db_engine, name="b", position=1)
    assert a.sender_domain == "vip.test"
    assert [r.name for r in automation.list_rules(db_engine)] == ["b", "a"]
    assert automation.get_rule(db_engine, "a") == a
    assert automation.get_rule(db_engine, a.id) == a
    with pytest.raises(automation.RuleError, match="already exists"):
        _add_rule(db_engine, name="a")
    with pytest.raises(automation.RuleError, match="sandbox"):
        _add_rule(db_engine, name="c", text_template="{{ ''.__class__.__mro__ }}")
    with pytest.raises(automation.RuleError):
        automation.update_rule(db_engine, "a", text_template="{{ nope }}")
    changed = automation.update_rule(db_engine, "a", position=0, enabled=False)
    assert changed is not None and changed.position == 0 and not changed.enabled
    assert automation.update_rule(db_engine, "zzz", position=1) is None
    assert automation.remove_rule(db_engine, b.id)
    assert not automation.remove_rule(db_engine, b.id)
    assert [r.name for r in automation.list_rules(db_engine)] == ["a"]


def test_unsendable_address_never_blocks_the_case(
    db_engine: Engine, routing: Any, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    _add_rule(db_engine)
    case = _case(db_engine, routing)
    # Accepted by SMTP, but the outbound queue refuses address literals: logged, no exception.
    _respond(db_engine, settings, _event(routing, mail_from="ada@[192.0.2.1]", case=case))
    assert _outbound(db_engine) == []
    assert any("auto-response not sent" in e[2] for e in _log(db_engine))
