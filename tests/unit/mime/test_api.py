"""The package's public API, and the accept path's cheap header look-ups still behave."""

from __future__ import annotations

import dataclasses

import pytest

import mailcase.mime as mime
from mailcase.mime import header_block, message_id, parse_message

from .helpers import all_fixtures, raw


def test_exported_members_are_exactly_all() -> None:
    public = {name for name in dir(mime) if not name.startswith("_")}
    modules = {"charset", "fields", "headers", "html", "htmlbound", "ical", "model", "parse", "report", "tnef"}
    assert public - modules == set(mime.__all__)
    for name in mime.__all__:
        assert getattr(mime, name) is not None


def test_inbound_email_is_frozen() -> None:
    e = parse_message(raw("gmail-alternative.eml"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.subject = "x"  # type: ignore[misc]
    assert isinstance(e.to, tuple) and isinstance(e.headers, tuple)


def test_header_block_and_message_id() -> None:
    assert header_block(b"A: 1\r\nB: 2\r\n\r\nbody") == b"A: 1\r\nB: 2"
    assert header_block(b"A: 1\n\nbody") == b"A: 1"
    assert header_block(b"A: 1") == b"A: 1"
    assert header_block(memoryview(b"A: 1\r\n\r\n")) == b"A: 1"
    assert message_id(b"Subject: x\r\nMessage-ID:\r\n <a@b>\r\n\r\nbody") == "<a@b>"
    assert message_id(b"Subject: x\r\n\r\nMessage-ID: <body@b>\r\n") is None
    assert message_id(b"Message-ID:   \r\n\r\n") is None
    assert message_id(bytearray(b"message-id: <c@d>\r\n\r\n")) == "<c@d>"


@pytest.mark.parametrize("name", all_fixtures())
def test_scan_and_parse_agree_on_message_id(name: str) -> None:
    data = raw(name)
    assert parse_message(data).message_id == message_id(data)
