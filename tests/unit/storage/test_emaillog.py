"""Email log queries and CSV/JSON export."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine

from mailcase.storage import emaillog
from mailcase.storage.spool import LogEntry

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _entries() -> list[LogEntry]:
    return [
        LogEntry(time=T0, queue_id="Q1", client_ip="192.0.2.1", helo="a.example",
                 mail_from="Alice@Example.org", rcpt_to=("support@example.test",),
                 tls_version="TLSv1.3", tls_cipher="TLS_AES_128_GCM_SHA256", size=100,
                 message_id="<1@example.org>", outcome="accepted", reply_code=250,
                 reply_text="2.0.0 Ok: queued as Q1"),
        LogEntry(time=T0 + timedelta(minutes=1), client_ip="192.0.2.2",
                 mail_from="spam@example.net", rcpt_to=("nobody@example.test",),
                 outcome="rejected", reply_code=550, reply_text="5.1.1 No such user",
                 reason="RCPT: unknown recipient"),
        LogEntry(time=T0 + timedelta(minutes=2), queue_id="Q1", outcome="processed",
                 mail_from="alice@example.org", rcpt_to=("support@example.test",)),
        LogEntry(time=T0 + timedelta(minutes=3), queue_id="Q3", mail_from="bob@example.org",
                 rcpt_to=("sales@example.test", "SUPPORT@example.test"), outcome="accepted",
                 reply_code=250),
        LogEntry(time=T0 + timedelta(minutes=4), direction="outbound", queue_id="O1",
                 mail_from="support@example.test", rcpt_to=("carol@example.com",),
                 outcome="deferred", reply_code=451, reason="=HYPERLINK(\"x\")"),
    ]


@pytest.fixture
def logged(db_engine: Engine) -> Engine:
    assert emaillog.append(db_engine, _entries()) == 5
    return db_engine


def _qids(rows: list[dict[str, object]]) -> list[object]:
    return [(r["queue_id"], r["outcome"]) for r in rows]


def test_query_filters(logged: Engine) -> None:
    rows = emaillog.query(logged)
    assert [r["time"] for r in rows] == sorted((r["time"] for r in rows), reverse=True)
    assert rows[0]["direction"] == "outbound" and rows[-1]["reply_code"] == 250
    assert rows[-1]["rcpt_to"] == ["support@example.test"]
    assert rows[-1]["time"] == T0 and rows[-1]["time"].tzinfo is not None  # type: ignore[union-attr]
    assert set(rows[0]) == set(emaillog.COLUMNS)

    assert _qids(emaillog.query(logged, queue_id="Q1")) == [("Q1", "processed"), ("Q1", "accepted")]
    assert _qids(emaillog.query(logged, outcome="rejected")) == [(None, "rejected")]
    since, until = T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)
    window = emaillog.query(logged, since=since, until=until)
    assert _qids(window) == [("Q1", "processed"), (None, "rejected")]
    assert len(emaillog.query(logged, limit=2)) == 2
    assert _qids(emaillog.query(logged, direction="outbound")) == [("O1", "deferred")]


def test_address_matches_sender_or_any_recipient_ignoring_case(logged: Engine) -> None:
    by_sender = emaillog.query(logged, address="ALICE@example.org")
    assert _qids(by_sender) == [("Q1", "processed"), ("Q1", "accepted")]
    by_rcpt = emaillog.query(logged, address="support@example.test")
    assert _qids(by_rcpt) == [("O1", "deferred"), ("Q3", "accepted"), ("Q1", "processed"),
                              ("Q1", "accepted")]
    assert emaillog.query(logged, address="nobody@elsewhere.test") == []
    # no LIKE wildcards: "%" is just a character
    assert emaillog.query(logged, address="%") == []


def test_csv_export(logged: Engine) -> None:
    text = emaillog.to_csv(emaillog.query(logged))
    parsed = list(csv.reader(io.StringIO(text)))
    assert tuple(parsed[0]) == emaillog.COLUMNS
    rows = [dict(zip(parsed[0], r, strict=True)) for r in parsed[1:]]
    assert len(rows) == 5
    q3 = next(r for r in rows if r["queue_id"] == "Q3")
    assert q3["rcpt_to"] == "sales@example.test SUPPORT@example.test"
    assert q3["time"] == (T0 + timedelta(minutes=3)).isoformat()
    assert q3["requiretls"] == "false" and q3["tls_version"] == ""
    outbound = next(r for r in rows if r["queue_id"] == "O1")
    assert outbound["reason"] == "'=HYPERLINK(\"x\")"  # no formula for spreadsheets
    assert emaillog.to_csv([]) == ",".join(emaillog.COLUMNS) + "\r\n"


def test_json_export(logged: Engine) -> None:
    rows = json.loads(emaillog.to_json(emaillog.query(logged)))
    assert len(rows) == 5
    assert rows[-1]["time"] == T0.isoformat()
    assert rows[-1]["rcpt_to"] == ["support@example.test"]
    assert rows[0]["reason"] == "=HYPERLINK(\"x\")"  # JSON keeps data as it is
    assert json.loads(emaillog.to_json([])) == []


@given(st.text(), st.lists(st.text(), max_size=3))
def test_csv_cells_survive_any_text(reason: str, rcpts: list[str]) -> None:
    row = {"reason": reason, "rcpt_to": rcpts, "time": T0, "size": 5, "requiretls": True}
    parsed = list(csv.reader(io.StringIO(emaillog.to_csv([row]), newline="")))
    got = dict(zip(parsed[0], parsed[1], strict=True))
    expected = "'" + reason if reason.startswith(("=", "+", "-", "@", "\t", "\r")) else reason
    assert got["reason"] == expected
    assert got["size"] == "5" and got["requiretls"] == "true"


def test_log_entry_is_checked() -> None:
    with pytest.raises(ValueError):
        LogEntry(time=T0, outcome="maybe")
    with pytest.raises(ValueError):
        LogEntry(time=T0, direction="sideways", outcome="accepted")
    with pytest.raises(ValueError):
        LogEntry(time=datetime(2026, 1, 1), outcome="accepted")


def test_outcome_choices_come_from_the_model(db_engine: Engine) -> None:
    """Issue 12.10: `log --outcome` offers every outcome the model has, and an unknown one is
    an error that lists them (it printed "(no entries)")."""
    from click.testing import CliRunner

    from mailcase.cli import cli
    from mailcase.storage.emaillog import OUTCOMES

    help_text = CliRunner().invoke(cli, ["log", "--help"], terminal_width=400).output
    listed = help_text.split("--outcome [", 1)[1].split("]", 1)[0].split("|")
    assert listed == list(OUTCOMES)
    with pytest.raises(ValueError, match="unknown outcome 'sent': one of accepted, rejected"):
        emaillog.query(db_engine, outcome="sent")
    for outcome in OUTCOMES:  # each one can be written and found
        emaillog.append(db_engine, [LogEntry(time=datetime.now(UTC), outcome=outcome)])
        assert [r["outcome"] for r in emaillog.query(db_engine, outcome=outcome)] == [outcome]
