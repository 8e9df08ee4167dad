"""Parsing inbound mail into a typed `InboundEmail`, and cheap header look-ups for the accept path.

- `header_block` / `message_id`: a scan of the raw header block, cheap enough for every
  accepted message (the SMTP accept path logs the Message-ID before anything is parsed).
- `parse_message`: the full parse (bodies, charsets, attachments, inline images, TNEF,
  calendar parts, sanitised HTML, auto-submitted signals, DSN fields), run by the pipeline.
"""

from mailcase.mime.headers import header_block, message_id
from mailcase.mime.html import html_to_text, sanitize_html
from mailcase.mime.model import (
    Address,
    Attachment,
    AutoReason,
    AutoSignal,
    AutoSubmission,
    CalendarEvent,
    CalendarInfo,
    Defect,
    DeliveryReport,
    DsnRecipient,
    InboundEmail,
)
from mailcase.mime.parse import (
    MAX_HEADERS,
    MAX_HTML_DEPTH,
    MAX_HTML_INPUT,
    MAX_TEXT,
    parse_message,
)

__all__ = [
    "MAX_HEADERS",
    "MAX_HTML_DEPTH",
    "MAX_HTML_INPUT",
    "MAX_TEXT",
    "Address",
    "Attachment",
    "AutoReason",
    "AutoSignal",
    "AutoSubmission",
    "CalendarEvent",
    "CalendarInfo",
    "Defect",
    "DeliveryReport",
    "DsnRecipient",
    "InboundEmail",
    "header_block",
    "html_to_text",
    "message_id",
    "parse_message",
    "sanitize_html",
]
