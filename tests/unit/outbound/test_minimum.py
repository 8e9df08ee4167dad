"""The RFC 5322 minimum of a message given whole: added headers, refusals, hostile input."""

from __future__ import annotations

import pytest

from mailcase.outbound.minimum import MessageRefusedError, complete_message


def test_a_complete_message_is_returned_as_it_is() -> None:
    raw = (b"From: =?utf-8?q?J=C3=B6rg?= <j@example.test>,\r\n b@example.test\r\n"
           b"Date: x\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n")
    assert complete_message(raw, envelope_from="j@example.test").content is raw


def test_folded_and_case_varied_fields_count_as_present() -> None:
    raw = b"FROM:\r\n <j@example.test>\r\ndate: x\r\nmessage-ID: <1@x>\r\nSubject: s\r\n\r\n"
    assert complete_message(raw, envelope_from="j@example.test").warnings == ()


def test_only_the_missing_ones_are_added() -> None:
    done = complete_message(b"From: j@example.test\r\nSubject: s\r\n\r\nb\r\n",
                            envelope_from="other@example.test")
    assert [w.split(":")[0] for w in done.warnings] == ["no Date header", "no Message-ID header"]
    assert done.content.startswith(b"Date: ")
    assert b"@example.test>\r\nFrom: j@example.test\r\n" in done.content


@pytest.mark.parametrize("raw", [
    b"",
    b"\r\n\r\nbody\r\n",
    b"just text\r\n",
    b"From: <>\r\nSubject: s\r\n\r\nb\r\n",
    b"From: a@example.test, not an address\r\nSubject: s\r\n\r\nb\r\n",
    b"Subject: \r\n\r\n \r\n",
])
def test_no_email_is_refused(raw: bytes) -> None:
    with pytest.raises(MessageRefusedError):
        complete_message(raw, envelope_from="j@example.test")


def test_a_huge_header_section_is_looked_at_in_bounded_size() -> None:
    raw = b"X-Filler: " + b"a" * 2_000_000 + b"\r\nSubject: s\r\n\r\nbody\r\n"
    done = complete_message(raw, envelope_from="j@example.test")
    assert done.content.endswith(raw) and len(done.warnings) == 3
