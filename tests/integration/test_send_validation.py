"""Issue 12.3: `mailcase send` sends only what is an email, and says when nobody will get it.

Through the command line, on an instance that is not running (the queue is in the database):
a missing From, Date or Message-ID is added with a warning (as Postfix's cleanup does for
local mail); plain text given to --eml, a From without a usable address and an empty message
are refused with what to do instead; a suppressed recipient is named, and the exit status is 1
when every recipient is suppressed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.platform import Platform, running_platform


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("send"), start=False) as p:
        p.cli("init")
        yield p


def _content(p: Platform, queue_id: str) -> bytes:
    from sqlalchemy import select

    from mailcase.outbound.models import outbound_contents, outbound_messages
    from mailcase.storage.db import make_engine

    engine = make_engine(f"sqlite:///{p.data_dir / 'mailcase.db'}")
    try:
        with engine.connect() as conn:
            return bytes(conn.execute(
                select(outbound_contents.c.content)
                .join(outbound_messages, outbound_messages.c.id == outbound_contents.c.message_pk)
                .where(outbound_messages.c.queue_id == queue_id)).scalar_one())
    finally:
        engine.dispose()


def _send(p: Platform, *args: str) -> Any:
    return p.cli("send", "--from", "agent@example.test", "--to", "kunde@customer.test", *args,
                 check=False)


def test_missing_from_date_and_message_id_are_added_with_a_warning(
    mc: Platform, tmp_path: Path
) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(b"Subject: no originator\n\nbody\n")
    res = _send(mc, "--eml", str(eml))
    assert res.returncode == 0, res.stderr
    qid = res.stdout.strip()
    for header in ("From", "Date", "Message-ID"):
        assert f"warning: {eml}: no {header} header: added {header}: " in res.stderr
    head = _content(mc, qid).split(b"\r\n\r\n", 1)[0]
    assert b"From: <agent@example.test>\r\n" in head
    assert b"\r\nDate: " in head and b"\r\nMessage-ID: <" in head
    shown = json.loads(mc.cli("outbound", "show", qid, "--json").stdout)
    assert shown["message_id"] and shown["message_id"].endswith("@example.test>")


def test_a_whole_message_goes_unchanged_and_without_warnings(mc: Platform, tmp_path: Path) -> None:
    eml = tmp_path / "m.eml"
    raw = (b"From: Agent <agent@example.test>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
           b"Message-ID: <whole-1@example.test>\r\nSubject: whole\r\n\r\nbody\r\n")
    eml.write_bytes(raw)
    res = _send(mc, "--eml", str(eml))
    assert res.returncode == 0 and res.stderr == ""
    assert _content(mc, res.stdout.strip()) == raw


@pytest.mark.parametrize(("content", "says"), [
    (b"Hello, please call me back.\nThanks\n", "first line is not a header field"),
    (b"From: undisclosed\nSubject: x\n\nbody\n", "has no usable address"),
    (b"From: a@example.test\nSubject:\n\n\n", "neither a subject nor a body"),
])
def test_what_is_no_email_is_refused(
    mc: Platform, tmp_path: Path, content: bytes, says: str
) -> None:
    before = mc.cli("outbound", "list", "--json").stdout
    eml = tmp_path / "m.eml"
    eml.write_bytes(content)
    res = _send(mc, "--eml", str(eml))
    assert res.returncode != 0 and says in res.stderr, res
    assert "Traceback" not in res.stderr
    assert mc.cli("outbound", "list", "--json").stdout == before  # nothing queued


def test_an_empty_subject_and_body_are_refused(mc: Platform, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    for extra in ((), ("--body-file", str(empty)), ("--subject", " ")):
        res = _send(mc, *extra)
        assert res.returncode == 2 and "nothing to send" in res.stderr, (extra, res)


def test_suppressed_recipients_are_named_and_all_suppressed_exits_1(mc: Platform) -> None:
    from mailcase.outbound.bounces.suppression import suppress
    from mailcase.storage.db import begin_write, make_engine

    engine = make_engine(f"sqlite:///{mc.data_dir / 'mailcase.db'}")
    try:
        with begin_write(engine) as conn:
            suppress(conn, "gone@customer.test", status="5.1.1", reason="unknown")
    finally:
        engine.dispose()
    some = mc.cli("send", "--from", "agent@example.test", "--to", "gone@customer.test",
                  "--to", "here@customer.test", "--subject", "hi", check=False)
    assert some.returncode == 0, some
    assert "gone@customer.test: not sent: on the suppression list" in some.stderr
    assert "mailcase bounces clear gone@customer.test" in some.stderr
    assert "here@customer.test" not in some.stderr
    every = mc.cli("send", "--from", "agent@example.test", "--to", "Gone@customer.test",
                   "--subject", "hi", check=False)
    assert every.returncode == 1
    assert "every recipient is suppressed" in every.stderr
    qid = every.stdout.strip()  # stored (visible in the queue as bounced), never sent
    assert json.loads(mc.cli("outbound", "show", qid, "--json").stdout)["state"] == "bounced"
