"""The RFC 5322 minimum of a message given whole (`mailcase send --eml`, the API's `eml`).

RFC 5322 §3.6: a message has an origination date (Date) and an originator (From); a
Message-ID SHOULD be there. Postfix's cleanup adds missing From, Date and Message-ID headers
to locally submitted mail (``always_add_missing_headers``); we do the same and say so, so that
what leaves is an email a receiver accepts and threads. What cannot be repaired is refused
with what to do instead: a file whose first line is no header field (plain text given to
`--eml`), a From without any usable address, an empty message.

Pure functions over bytes; the caller prints the warnings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, getaddresses

from mailcase.outbound.compose import new_message_id
from mailcase.smtp.address import AddressError, parse_mailbox

__all__ = ["Completed", "MessageRefusedError", "complete_message"]

# RFC 5322 §2.2 / §3.6.8: a field name is printable US-ASCII except ":", then ":".
_FIELD = re.compile(rb"^[!-9;-~]+[ \t]*:")
_HEADER_END = re.compile(rb"\r\n\r\n")
# Header bytes parsed at most (a field past them counts as missing and is added again: a
# 256 KB header section is no normal message, and the parse stays bounded).
_MAX_HEADER_BYTES = 256 * 1024


class MessageRefusedError(ValueError):
    """The content cannot be sent as an email; the text says what to do instead."""


@dataclass(frozen=True, slots=True)
class Completed:
    """The content to queue and what was added to it (one warning per added header)."""

    content: bytes
    warnings: tuple[str, ...]


def _fields(head: bytes) -> dict[str, list[str]]:
    """Field name (lower case) → unfolded values, for the fields of `head` (CRLF lines)."""
    out: dict[str, list[str]] = {}
    name: str | None = None
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and name is not None:
            out[name][-1] += " " + line.strip().decode("utf-8", "replace")
            continue
        key, sep, value = line.partition(b":")
        if not sep:
            name = None
            continue
        name = key.strip().decode("ascii", "replace").lower()
        out.setdefault(name, []).append(value.strip().decode("utf-8", "replace"))
    return out


def _usable(pair: tuple[str, str]) -> bool:
    try:
        parse_mailbox(pair[1])
    except AddressError:
        return False
    return True


def complete_message(content: bytes, *, envelope_from: str) -> Completed:
    """`content` (CRLF lines, as `enqueue.normalize_content` makes them) with From, Date and
    Message-ID added when missing; `MessageRefusedError` when it is no email at all."""
    first = content.split(b"\r\n", 1)[0]
    if not _FIELD.match(first):
        raise MessageRefusedError(
            "the file is not an RFC 5322 message: its first line is not a header field "
            "(like 'From: ...'); send plain text with --body-file and --subject instead"
        )
    end = _HEADER_END.search(content)  # one linear scan
    head_end = end.start() if end is not None else len(content)
    body = content[end.end():] if end is not None else b""
    fields = _fields(content[: min(head_end, _MAX_HEADER_BYTES)])
    looked_at_all = head_end <= _MAX_HEADER_BYTES
    if looked_at_all and not body.strip() and not "".join(fields.get("subject", [])).strip():
        raise MessageRefusedError("the message has neither a subject nor a body: nothing to send")
    added: list[bytes] = []
    warnings: list[str] = []
    if "from" in fields:
        if not all(_usable(a) for a in getaddresses(fields["from"])) or not any(
            a for _, a in getaddresses(fields["from"])
        ):
            raise MessageRefusedError(
                f"the From header {fields['from'][0][:200]!r} has no usable address "
                "(RFC 5322 §3.6.2); correct it in the file"
            )
    else:
        if not envelope_from:
            raise MessageRefusedError("no From header and no sender to take it from")
        added.append(b"From: <" + envelope_from.encode("utf-8") + b">")
        warnings.append(f"no From header: added From: <{envelope_from}> (the envelope sender)")
    if "date" not in fields:
        date = format_datetime(datetime.now(UTC))
        added.append(b"Date: " + date.encode("ascii"))
        warnings.append(f"no Date header: added Date: {date}")
    if "message-id" not in fields:
        domain = envelope_from.rpartition("@")[2] or "localhost"
        mid = new_message_id(domain)
        added.append(b"Message-ID: " + mid.encode("utf-8"))
        warnings.append(f"no Message-ID header: added Message-ID: {mid}")
    if not added:
        return Completed(content, ())
    return Completed(b"\r\n".join(added) + b"\r\n" + content, tuple(warnings))
