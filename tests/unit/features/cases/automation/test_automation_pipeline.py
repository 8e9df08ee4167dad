"""The automation hooks as the pipeline calls them: spool a message, run the pipeline, look."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from mailcase.config import Settings, load_settings
from mailcase.features.cases.automation import service as automation
from mailcase.features.cases.store import cases as case_store
from mailcase.features.cases.store import emails as email_store
from mailcase.features.cases.store import routing as routing_store
from mailcase.mime import parse_message
from mailcase.outbound.models import outbound_contents, outbound_messages
from mailcase.storage import messages
from tests.unit.features.cases.helpers import deliver, eml

ROUTING = "support@ours.test"


def _settings(tmp: Path, **automation_cfg: Any) -> Settings:
    return load_settings(
        environ={},
        overrides={
            "data_dir": str(tmp),
            "server": {"hostname": "mx.ours.test"},
            "cases": {"authenticate": False},
            "automation": automation_cfg,
        },
    )


def _queued(engine: Engine) -> list[tuple[str, str, bytes]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                outbound_messages.c.mail_from,
                outbound_messages.c.category,
                outbound_contents.c.content,
            )
            .join(outbound_contents, outbound_contents.c.message_pk == outbound_messages.c.id)
            .order_by(outbound_messages.c.id)
        ).all()
    return [(r[0], r[1], bytes(r[2])) for r in rows]


async def test_refused_sender_gets_a_dsn_with_the_original_headers(
    db_engine: Engine, tmp_path: Path
) -> None:
    routing_store.add_routing(db_engine, ROUTING, name="Support", accept_from=["partner.test"])
    s = _settings(tmp_path, unauthorized_action="bounce")
    await deliver(db_engine, s, eml(message_id="<refused-1@customer.test>"))
    assert case_store.list_cases(db_engine, ()) == []
    ((mail_from, category, content),) = _queued(db_engine)
    assert mail_from == "" and category == "system"
    assert b"multipart/report" in content and b"report-type=delivery-status" in content
    assert b"Status: 5.7.1" in content
    assert b"<refused-1@customer.test>" in content  # the original's headers came back
    assert b"It is burning" not in content  # never its body
    parsed = parse_message(content)
    assert parsed.is_dsn and parsed.auto_submitted


async def test_acknowledgement_then_reply_to_it_threads(db_engine: Engine, tmp_path: Path) -> None:
    routing_store.add_routing(db_engine, ROUTING, name="Support")
    automation.add_rule(
        db_engine,
        name="ack",
        subject_template="Case {{ case_number }}",
        text_template="We opened case {{ case_number }} for {{ contact_name }}.",
    )
    s = _settings(tmp_path)
    await deliver(db_engine, s, eml())
    ((mail_from, category, content),) = _queued(db_engine)
    assert (mail_from, category) == ("", "auto")
    ack = parse_message(content)
    (case,) = case_store.list_cases(db_engine, ())
    number = case_store.format_number(case.number)
    assert ack.subject.startswith(f"Case {number} [ thread::")
    assert f"We opened case {number} for Ann Customer." in ack.text_body
    # The customer answers the acknowledgement (RE:, no token in the subject): same case.
    await deliver(
        db_engine,
        s,
        eml(subject="RE: something", in_reply_to=ack.message_id, body="Still burning.\r\n"),
    )
    assert len(case_store.list_cases(db_engine, ())) == 1
    assert len(_queued(db_engine)) == 1  # no acknowledgement for a reply on an existing case
    emails = email_store.list_emails(db_engine, number)
    assert emails is not None
    assert [e.direction for e in emails] == ["inbound", "outbound", "inbound"]


async def test_over_limit_requeue_keeps_the_message(db_engine: Engine, tmp_path: Path) -> None:
    routing_store.add_routing(db_engine, ROUTING, name="Support")
    s = _settings(tmp_path, daily_case_limit=1, over_limit_action="requeue")
    await deliver(db_engine, s, eml(subject="one"))
    await deliver(db_engine, s, eml(subject="two"))
    assert [c.subject for c in case_store.list_cases(db_engine, ())] == ["one"]
    states = [m.state for m in messages.list_messages(db_engine)]
    assert sorted(states) == ["processed", "received"]  # the second waits for tomorrow
