"""DSNs we build (RFC 3464 / RFC 6522), read back with mailcase's own parser."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcase.mime import parse_message
from mailcase.mime.model import AutoReason
from mailcase.outbound.dsn import DsnFailure, build_dsn, original_headers

ORIGINAL = (
    b"From: Support <support@example.test>\r\n"
    b"To: kunde@nirgendwo.example, zwei@nirgendwo.example\r\n"
    b"Subject: [Case 00001027] =?utf-8?q?Ihre_Anfrage?=\r\n"
    b"Message-ID: <mailcase.1027.f7a8b9@example.test>\r\n"
    b"Date: Wed, 12 Jun 2024 11:20:10 +0000\r\n"
    b"\r\n"
    b"SECRET BODY that must not be returned.\r\n"
)


def _dsn(**kw: object) -> bytes:
    args: dict[str, object] = {
        "reporting_mta": "mx.mailcase.test",
        "original_sender": "support@example.test",
        "failures": [
            DsnFailure("kunde@nirgendwo.example", "5.1.1",
                       "550 5.1.1 <kunde@nirgendwo.example>: User unknown",
                       remote_mta="mx.nirgendwo.example",
                       last_attempt=dt.datetime(2024, 6, 12, 11, 20, 13, tzinfo=dt.UTC)),
            DsnFailure("zwei@nirgendwo.example", "5.4.7", None),
        ],
        "original": ORIGINAL,
        "queue_id": "0AB12CD34EF5678901",
        "arrival_date": dt.datetime(2024, 6, 12, 11, 20, 11, tzinfo=dt.UTC),
    }
    args.update(kw)
    return build_dsn(**args)  # type: ignore[arg-type]


def test_dsn_parses_back_into_the_right_delivery_report() -> None:
    raw = _dsn()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    email = parse_message(raw)
    assert email.is_dsn
    report = email.delivery_report
    assert report is not None
    assert report.reporting_mta == "mx.mailcase.test"
    assert report.original_message_id == "<mailcase.1027.f7a8b9@example.test>"
    first, second = report.recipients
    assert (first.final_recipient, first.action, first.status) == (
        "kunde@nirgendwo.example", "failed", "5.1.1")
    assert first.remote_mta == "mx.nirgendwo.example"
    assert first.diagnostic_code is not None
    assert "550 5.1.1" in first.diagnostic_code and "User unknown" in first.diagnostic_code
    assert (second.final_recipient, second.status, second.diagnostic_code) == (
        "zwei@nirgendwo.example", "5.4.7", None)
    # Never answered by auto-responders; the original body is not returned.
    assert AutoReason.AUTO_SUBMITTED in email.auto_submitted.reasons
    assert email.header("Auto-Submitted") == "auto-replied"
    assert email.to[0].address == "support@example.test"
    assert b"SECRET BODY" not in raw
    assert b"Content-Type: text/rfc822-headers" in raw
    assert b"report-type=delivery-status" in raw
    assert b"Arrival-Date: Wed, 12 Jun 2024 11:20:11" in raw


def test_remote_text_cannot_inject_fields() -> None:
    evil = "550 no\r\nStatus: 2.0.0\r\nAction: delivered\nFinal-Recipient: rfc822; x@y"
    raw = _dsn(failures=[DsnFailure("a@b.example\r\nBcc: x@evil", "5.1.1", evil,
                                    remote_mta="mx\r\nX: y")])
    report = parse_message(raw).delivery_report
    assert report is not None
    [rec] = report.recipients
    assert (rec.action, rec.status) == ("failed", "5.1.1")
    assert b"\r\nStatus: 2.0.0" not in raw and b"\r\nBcc:" not in raw and b"\r\nX: y" not in raw


def test_bad_status_becomes_generic_and_long_diagnostics_fold() -> None:
    long_text = "550 " + " ".join(["word"] * 100)
    raw = _dsn(failures=[DsnFailure("a@b.example", "nonsense", long_text)])
    [rec] = parse_message(raw).delivery_report.recipients  # type: ignore[union-attr]
    assert rec.status == "5.0.0"
    lines = raw.split(b"\r\n")
    assert all(len(line) <= 78 for line in lines if not line.startswith(b"\tboundary"))
    assert rec.diagnostic_code is not None and rec.diagnostic_code.count("word") == 100


def test_eight_bit_headers_are_returned_and_declared() -> None:
    original = "Subject: Grüße\r\nMessage-ID: <u@example.test>\r\n\r\nbody\r\n".encode()
    raw = _dsn(original=original)
    assert "Grüße".encode() in raw and b"Content-Transfer-Encoding: 8bit" in raw
    report = parse_message(raw).delivery_report
    assert report is not None and report.original_message_id == "<u@example.test>"


def test_returned_headers_are_capped() -> None:
    big = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 80) for i in range(2000)) + b"\r\nbody"
    head = original_headers(big, limit=10_000)
    assert len(head) <= 10_000 and head.endswith(b"y" * 80)


def test_a_dsn_needs_a_recipient() -> None:
    with pytest.raises(ValueError):
        _dsn(failures=[])


@given(diagnostic=st.text(max_size=300), recipient=st.text(min_size=1, max_size=80),
       mta=st.text(max_size=60))
@settings(max_examples=150, deadline=None)
def test_any_remote_text_still_gives_one_failed_recipient(
    diagnostic: str, recipient: str, mta: str
) -> None:
    raw = _dsn(failures=[DsnFailure(recipient, "5.1.1", diagnostic, remote_mta=mta)])
    report = parse_message(raw).delivery_report
    assert report is not None
    assert [(r.action, r.status) for r in report.recipients] in ([("failed", "5.1.1")], [])
    # Whatever the text, no line can start a new field or break the MIME structure.
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
