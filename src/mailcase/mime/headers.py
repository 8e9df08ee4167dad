"""Cheap header look-ups on raw message bytes.

The accept path needs the Message-ID for the email log before the message is parsed; running
the stdlib email parser on every accepted message would cost more than the rest of the
accept path (DESIGN.md, performance notes), so only the header block is scanned here.
"""

from __future__ import annotations

import re

__all__ = ["header_block", "message_id"]

_MAX_HEADER_SCAN = 64 * 1024
_MESSAGE_ID = re.compile(rb"(?im)^message-id[ \t]*:[ \t]*((?:[^\r\n]|\r\n[ \t])*)")


def header_block(content: bytes | bytearray | memoryview) -> bytes:
    """The header section (without the blank line), at most the first 64 KiB."""
    head = bytes(content[:_MAX_HEADER_SCAN])
    end = head.find(b"\r\n\r\n")
    if end == -1:
        end = head.find(b"\n\n")
    return head if end == -1 else head[:end]


def message_id(content: bytes | bytearray | memoryview) -> str | None:
    """The Message-ID header value (`<…>` kept), unfolded; None when absent or empty."""
    m = _MESSAGE_ID.search(header_block(content))
    if m is None:
        return None
    value = re.sub(rb"\r\n[ \t]+", b" ", m.group(1)).strip()
    if not value:
        return None
    return value[:998].decode("utf-8", "replace")
