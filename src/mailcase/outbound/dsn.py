"""Building delivery status notifications (RFC 3464 / RFC 6522 multipart/report).

A DSN tells the sender that we gave up on some recipients. It goes out with an empty envelope
sender (`MAIL FROM:<>`, RFC 5321 §4.5.5) so that it can never cause another bounce, and with
`Auto-Submitted: auto-replied` (RFC 3834) so that auto-responders stay quiet. It carries the
original message's header block only (text/rfc822-headers), never its body: the sender has the
body, and returning it would make us a reflector for whatever content a forger chose.

Parsing inbound DSNs is `mailcase.mime` (`InboundEmail.delivery_report`); a test builds a DSN
here and parses it back there.

Everything taken from the remote side (diagnostic text, MTA names, addresses) is reduced to one
line of printable text first: a CR or LF in a reply must not start a new DSN field.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import format_datetime

__all__ = ["DsnFailure", "build_dsn", "original_headers"]

#: Most of the original header block that is returned (RFC 3462 asks for the headers only).
MAX_RETURNED_HEADERS = 64 * 1024
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_CTL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class DsnFailure:
    """One recipient we gave up on (RFC 3464 §2.3 per-recipient fields)."""

    recipient: str
    status: str = "5.0.0"
    diagnostic: str | None = None  # the remote reply, e.g. "550 5.1.1 User unknown"
    remote_mta: str | None = None
    original_recipient: str | None = None
    last_attempt: dt.datetime | None = None


def _line(value: str, limit: int = 900) -> str:
    """One line of printable text: controls (CR, LF, NUL ...) become a space."""
    return _CTL.sub(" ", value).strip()[:limit]


def _fold(name: str, value: str) -> str:
    """`Name: value` folded at spaces so that lines stay under 78 characters where possible."""
    words = value.split(" ")
    lines: list[str] = []
    current = f"{name}:"
    for w in words:
        if not w:
            continue
        if len(current) + 1 + len(w) > 76 and current.strip() and current != f"{name}:":
            lines.append(current)
            current = "    " + w
        else:
            current += " " + w
    lines.append(current)
    return "\r\n".join(lines)


def _status(value: str) -> str:
    """A well-formed status code (RFC 3463 class.subject.detail), else the generic 5.0.0."""
    v = value.strip()
    if re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", v):
        return v
    return "5.0.0"


def original_headers(content: bytes, limit: int = MAX_RETURNED_HEADERS) -> bytes:
    """The header block of a message (CRLF lines, no trailing blank line), at most `limit`."""
    m = _HEADER_END.search(content)
    head = content if m is None else content[: m.start()]
    head = re.sub(rb"\r?\n", b"\r\n", head)
    if len(head) > limit:
        cut = head.rfind(b"\r\n", 0, limit)
        head = head[: cut if cut > 0 else limit]
    return head


def _address(value: str) -> str:
    return _line(value, 320).strip("<>")


def build_dsn(
    *,
    reporting_mta: str,
    original_sender: str,
    failures: Sequence[DsnFailure],
    original: bytes,
    queue_id: str | None = None,
    arrival_date: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> bytes:
    """A complete multipart/report DSN (CRLF) to `original_sender` about `failures`.

    `original` is the message we could not deliver (only its headers are returned).
    Send it with an empty envelope sender.
    """
    if not failures:
        raise ValueError("a DSN needs at least one failed recipient")
    now = now or dt.datetime.now(dt.UTC)
    host = _line(reporting_mta, 253) or "localhost"
    boundary = f"{secrets.token_hex(12)}/{host}"
    sender = _address(original_sender)
    returned = original_headers(original)
    eight_bit = any(b > 0x7F for b in returned)

    human = [
        f"This is the mail system at host {host}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        "The headers of your message are attached; the delivery report follows.",
        "",
    ]
    for f in failures:
        why = _line(f.diagnostic or "") or f"status {_status(f.status)}"
        human.extend(textwrap.wrap(f"<{_address(f.recipient)}>: {why}", 76,
                                   subsequent_indent="    ", break_long_words=False,
                                   break_on_hyphens=False))
    human_text = "\r\n".join(human) + "\r\n"

    per_message = [f"Reporting-MTA: dns; {host}"]
    if queue_id:
        per_message.append(f"X-Mailcase-Queue-ID: {_line(queue_id, 64)}")
    if arrival_date is not None:
        per_message.append(f"Arrival-Date: {format_datetime(arrival_date.astimezone(dt.UTC))}")
    blocks = ["\r\n".join(per_message)]
    for f in failures:
        fields = [f"Final-Recipient: rfc822; {_address(f.recipient)}"]
        if f.original_recipient:
            fields.append(f"Original-Recipient: rfc822; {_address(f.original_recipient)}")
        fields += ["Action: failed", f"Status: {_status(f.status)}"]
        if f.remote_mta:
            fields.append(f"Remote-MTA: dns; {_line(f.remote_mta, 253)}")
        if f.diagnostic:
            fields.append(_fold("Diagnostic-Code", f"smtp; {_line(f.diagnostic)}"))
        if f.last_attempt is not None:
            when = format_datetime(f.last_attempt.astimezone(dt.UTC))
            fields.append(f"Last-Attempt-Date: {when}")
        blocks.append("\r\n".join(fields))
    status_text = "\r\n\r\n".join(blocks) + "\r\n"

    message_id = f"<{secrets.token_hex(16)}@{host}>"
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
        f"To: <{sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {format_datetime(now.astimezone(dt.UTC))}",
        f"Message-ID: {message_id}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
    ]
    if eight_bit:
        headers.append("Content-Transfer-Encoding: 8bit")
    b = boundary
    parts = [
        "\r\n".join(headers),
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{b}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        human_text.encode("ascii", "replace").decode("ascii"),
        f"--{b}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        status_text.encode("ascii", "replace").decode("ascii"),
        f"--{b}",
        "Content-Description: Undelivered Message Headers",
        "Content-Type: text/rfc822-headers",
    ]
    if eight_bit:
        parts.append("Content-Transfer-Encoding: 8bit")
    parts.append("")
    head = "\r\n".join(parts).encode("ascii", "replace") + b"\r\n"
    return head + returned + f"\r\n\r\n--{b}--\r\n".encode("ascii")
