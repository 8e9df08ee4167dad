"""The outbound queue's enqueue, on real SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, select

from mailcase.outbound.models import outbound_contents, outbound_messages, outbound_recipients
from mailcase.outbound.queue import enqueue as queue_enqueue
from mailcase.outbound.queue.enqueue import EnqueueError, Envelope, enqueue, normalize_content
from mailcase.storage.db import begin_write

MSG = b"From: a@example.org\r\nTo: b@example.net\r\nMessage-ID: <id1@example.org>\r\n\r\nHi.\r\n"


@pytest.fixture
def hooks() -> Iterator[list[queue_enqueue.EnqueueHook]]:
    """The hooks a test passes to `enqueue` (nothing is registered globally any more)."""
    yield []


def _message(engine: Engine, qid: str) -> dict[str, object]:
    with engine.connect() as conn:
        row = conn.execute(select(outbound_messages).where(outbound_messages.c.queue_id == qid)).one()
        return dict(row._mapping)


def _recipients(engine: Engine, pk: int) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [
            (r.address, r.domain, r.state)
            for r in conn.execute(
                select(outbound_recipients)
                .where(outbound_recipients.c.message_pk == pk)
                .order_by(outbound_recipients.c.id)
            )
        ]


def test_enqueue_stores_message_content_and_recipients(db_engine: Engine) -> None:
    with begin_write(db_engine) as conn:
        qid = enqueue(
            conn,
            mail_from="a@Example.ORG",
            rcpt_to=["b@Example.NET", "c@example.com", "B@example.net"],
            content=MSG,
            category="auto",
            source="case:00001027",
        )
    row = _message(db_engine, qid)
    assert row["mail_from"] == "a@example.org"
    assert row["category"] == "auto" and row["source"] == "case:00001027"
    assert row["state"] == "queued" and row["attempts"] == 0
    assert row["message_id"] == "<id1@example.org>"  # taken from the header
    assert row["size"] == len(MSG)
    assert _recipients(db_engine, int(row["id"])) == [  # type: ignore[call-overload]
        ("b@example.net", "example.net", "queued"),
        ("c@example.com", "example.com", "queued"),
    ]  # B@example.net is the same mailbox in practice: sent once
    with db_engine.connect() as conn:
        assert conn.execute(select(outbound_contents.c.content)).scalar_one() == MSG


def test_enqueue_is_part_of_the_callers_transaction(db_engine: Engine) -> None:
    with pytest.raises(RuntimeError), begin_write(db_engine) as conn:
        enqueue(conn, mail_from="a@example.org", rcpt_to=["b@example.net"], content=MSG)
        raise RuntimeError("the caller's own change failed")
    with db_engine.connect() as conn:
        assert conn.execute(select(outbound_messages)).all() == []
        assert conn.execute(select(outbound_contents)).all() == []


@pytest.mark.parametrize(
    ("kw", "what"),
    [
        ({"mail_from": "not an address"}, "sender"),
        ({"rcpt_to": ["a@b@c"]}, "recipient"),
        ({"rcpt_to": []}, "at least one recipient"),
        ({"category": "marketing"}, "category"),
        ({"rcpt_to": ["x@[127.0.0.1]"]}, "recipient"),
    ],
)
def test_enqueue_refuses_bad_input(db_engine: Engine, kw: dict[str, object], what: str) -> None:
    args: dict[str, object] = {
        "mail_from": "a@example.org", "rcpt_to": ["b@example.net"], "content": MSG
    }
    args.update(kw)
    with pytest.raises(EnqueueError, match=what), begin_write(db_engine) as conn:
        enqueue(conn, **args)  # type: ignore[arg-type]
    with db_engine.connect() as conn:
        assert conn.execute(select(outbound_messages)).all() == []


def test_null_sender_is_allowed_for_dsns(db_engine: Engine) -> None:
    with begin_write(db_engine) as conn:
        qid = enqueue(conn, mail_from="", rcpt_to=["b@example.net"], content=MSG, category="system")
    assert _message(db_engine, qid)["mail_from"] == ""


def test_content_is_normalised_to_crlf() -> None:
    assert normalize_content(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd\r\n"
    assert normalize_content(b"a\r\n") == b"a\r\n"
    assert normalize_content(b"\n\n") == b"\r\n\r\n"


def test_bare_newlines_are_stored_as_crlf(db_engine: Engine) -> None:
    with begin_write(db_engine) as conn:
        enqueue(
            conn, mail_from="a@example.org", rcpt_to=["b@example.net"],
            content=b"Subject: x\nMessage-ID: <n@x>\n\nline\rtwo", message_id="<given@x>",
        )
    with db_engine.connect() as conn:
        assert conn.execute(select(outbound_contents.c.content)).scalar_one() == (
            b"Subject: x\r\nMessage-ID: <n@x>\r\n\r\nline\r\ntwo\r\n"
        )
        # an explicit message_id wins over the header
        assert conn.execute(select(outbound_messages.c.message_id)).scalar_one() == "<given@x>"


def test_queue_ids_are_unique(db_engine: Engine) -> None:
    with begin_write(db_engine) as conn:
        ids = {
            enqueue(conn, mail_from="a@example.org", rcpt_to=["b@example.net"], content=MSG)
            for _ in range(200)
        }
    assert len(ids) == 200


def test_hooks_add_and_suppress_recipients(db_engine: Engine, hooks: list[queue_enqueue.EnqueueHook]) -> None:
    seen: list[Envelope] = []

    def bcc(conn: Connection, env: Envelope) -> Envelope:
        seen.append(env)
        return Envelope(
            mail_from=env.mail_from,
            rcpt_to=(*env.rcpt_to, "archive@example.org"),
            content=env.content,
            category=env.category,
            source=env.source,
            message_id=env.message_id,
            suppressed=frozenset({"Bounced@example.net"}),
        )

    hooks.append(bcc)
    with begin_write(db_engine) as conn:
        qid = enqueue(
            conn, mail_from="a@example.org", rcpt_to=["bounced@example.net", "ok@example.net"],
            content=MSG, hooks=hooks,
        )
    assert seen[0].rcpt_to == ("bounced@example.net", "ok@example.net")
    row = _message(db_engine, qid)
    assert row["state"] == "queued"
    assert _recipients(db_engine, int(row["id"])) == [  # type: ignore[call-overload]
        ("bounced@example.net", "example.net", "suppressed"),
        ("ok@example.net", "example.net", "queued"),
        ("archive@example.org", "example.org", "queued"),
    ]


def test_all_recipients_suppressed_means_nothing_to_send(
    db_engine: Engine, hooks: list[queue_enqueue.EnqueueHook]
) -> None:
    def suppress_all(conn: Connection, env: Envelope) -> Envelope:
        return Envelope(
            mail_from=env.mail_from, rcpt_to=env.rcpt_to, content=env.content,
            category=env.category, source=env.source, message_id=env.message_id,
            suppressed=frozenset(env.rcpt_to),
        )

    hooks.append(suppress_all)
    with begin_write(db_engine) as conn:
        qid = enqueue(conn, mail_from="a@example.org", rcpt_to=["b@example.net"], content=MSG,
                      hooks=hooks)
    row = _message(db_engine, qid)
    assert row["state"] == "bounced" and row["finished_at"] is not None


def test_a_hook_cannot_smuggle_a_bad_address(db_engine: Engine, hooks: list[queue_enqueue.EnqueueHook]) -> None:
    def bad(conn: Connection, env: Envelope) -> Envelope:
        return Envelope(
            mail_from=env.mail_from, rcpt_to=("x\r\nRCPT TO:<evil@x>",), content=env.content,
            category=env.category, source=env.source, message_id=env.message_id,
        )

    hooks.append(bad)
    with pytest.raises(EnqueueError), begin_write(db_engine) as conn:
        enqueue(conn, mail_from="a@example.org", rcpt_to=["b@example.net"], content=MSG,
                hooks=hooks)
