"""Issue 11 item 8: a client cannot forge fields in maillog lines.

`MAIL FROM:<"x>, status=sent (delivered to admin), to=<ceo"@x.test>` (a valid quoted local
part) once produced a line with two `status=` and two `to=` fields. Every line must parse
back into exactly the fields written, whatever their values.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcase import maillog
from tests.support.platform import Platform

FORGED_FROM = '"x>, status=sent (delivered to admin), to=<ceo"@x.test'

HOSTILE = [
    FORGED_FROM,
    'a", to=<b>',
    '"',
    '"quoted"',
    "\\",
    '\\", x=1',
    ", ",
    ",",
    "a,, b",
    "k=v",
    "=",
    "<>",
    "",
    " ",
    "trailing ",
    "line\nbreak",
    "cr\rlf\r\n",
    "nul\x00",
    "tab\tand\x1b[31mansi",
    "del\x7f",
    "jörg@exämple.test",
    "日本語, status=sent",
    "ls\u2028ps\u2029",
    "bidi\u202eevil",
    "emoji 😀 and tag \U000e0001",
    "lone \ud800 surrogate",
    "NOQUEUE: status=sent",
]


@pytest.fixture
def logfile(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "mail.log"
    maillog.configure(str(path))
    try:
        yield path
    finally:
        maillog.configure("none")


def _lines(path: Path) -> list[maillog.Line]:
    maillog.flush()
    # The sink writes UTF-8, replacing what cannot be encoded; escaped values never need it.
    return [maillog.parse_line(ln) for ln in path.read_text("utf-8").splitlines()]


def test_the_reported_sender_adds_no_fields(logfile: Path) -> None:
    maillog.accepted(
        "3F2A9C0B1D7E0001", client_ip="192.0.2.1", helo="h.test", mail_from=FORGED_FROM,
        rcpt_to=["support@example.test"], size=10, tls="plaintext", message_id=None,
    )
    (line,) = _lines(logfile)
    keys = [k for k, _ in line.fields]
    assert keys == ["client", "helo", "from", "to", "size", "tls", "status"]
    assert dict(line.fields)["from"] == f"<{FORGED_FROM}>"
    assert dict(line.fields)["status"] == "queued"
    assert dict(line.fields)["to"] == "<support@example.test>"


@pytest.mark.parametrize("value", HOSTILE)
def test_every_field_round_trips(logfile: Path, value: str) -> None:
    maillog.event("smtpd", None, helo=value, reason=value, status="queued", last=value)
    (line,) = _lines(logfile)
    raw = logfile.read_text("utf-8")
    # One line, and nothing in it a terminal would act on (ESC, CR, bidi controls…).
    assert raw.endswith("\n") and raw[:-1].isprintable(), raw
    assert line.queue_id is None and line.program == "smtpd"
    assert line.fields == (("helo", value), ("reason", value), ("status", "queued"),
                           ("last", value))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=4))
def test_any_text_round_trips(tmp_path_factory: pytest.TempPathFactory,
                              values: list[str]) -> None:
    path = tmp_path_factory.mktemp("maillog") / "mail.log"
    maillog.configure(str(path))
    try:
        fields = {f"f{i}": v for i, v in enumerate(values)}
        maillog.event("pipeline", "3F2A9C0B1D7E0002", **fields)
        (line,) = _lines(path)
    finally:
        maillog.configure("none")
    assert line.queue_id == "3F2A9C0B1D7E0002"
    assert line.fields == tuple(fields.items())


def test_ordinary_values_stay_as_postfix_writes_them(logfile: Path) -> None:
    maillog.accepted(
        "Q1", client_ip="192.0.2.1", helo="mx.example", mail_from="a@b.example",
        rcpt_to=["c@d.example", "e@f.example"], size=2048, tls="TLSv1.3:TLS_AES_256_GCM_SHA384",
        message_id="<m1@b.example>",
    )
    maillog.delivered("Q2", to="x@y.example", relay="mx.y.example[192.0.2.7]:25", delay=0.5,
                      attempt=1, tls="TLSv1.3", reply="250 2.0.0 Ok: queued as ABC")
    maillog.flush()
    text = logfile.read_text()
    assert ('Q1: client=[192.0.2.1], helo=mx.example, from=<a@b.example>, '
            'to=<c@d.example>,<e@f.example>, size=2048, tls=TLSv1.3:TLS_AES_256_GCM_SHA384, '
            'message_id=<m1@b.example>, status=queued\n') in text
    assert "status=sent (250 2.0.0 Ok: queued as ABC)\n" in text
    assert '"' not in text


def test_the_attack_over_smtp_writes_one_status(platform: Platform) -> None:
    """End to end: the quoted-local-part sender through a real server's maillog (stderr)."""
    with smtplib.SMTP(*platform.smtp, timeout=30) as s:
        s.ehlo("attacker.test")
        code, _ = s.mail(FORGED_FROM)
        assert code == 250
        assert s.rcpt("support@example.test")[0] == 250
        code, _ = s.data(b"Subject: forged\r\n\r\nx\r\n")
        assert code == 250
    deadline = time.monotonic() + 10
    while True:
        lines = [
            maillog.parse_line(raw) for raw in platform.log_text().splitlines()
            if " mailcase/smtpd: " in raw and "ceo" in raw and "status=" in raw
        ]
        if lines:
            break
        assert time.monotonic() < deadline, "no maillog line for the message"
        time.sleep(0.1)
    (line,) = lines
    keys = [k for k, _ in line.fields]
    assert keys.count("status") == 1 and keys.count("to") == 1, line.fields
    assert dict(line.fields)["from"] == f"<{FORGED_FROM}>"
