"""The typed value that `parse_message` returns: what a feature needs from an inbound message.

Everything is a frozen dataclass with tuple fields, so a parsed message can be passed between
the pipeline and the features (and cached, compared, logged) without anyone mutating it under
another's feet. Field names follow Salesforce's `InboundEmail` where it has one (REFERENCE.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime

__all__ = [
    "Address",
    "Attachment",
    "AutoReason",
    "AutoSignal",
    "AutoSubmission",
    "CalendarEvent",
    "CalendarInfo",
    "DeliveryReport",
    "Defect",
    "DsnRecipient",
    "InboundEmail",
]


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox from an address header, display name decoded (RFC 2047 / RFC 6532)."""

    address: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Attachment:
    """A non-body part, with its decoded bytes.

    `content_id` is stored without the angle brackets, as `cid:` URLs reference it (RFC 2392).
    `inline` is true when the part is shown in the body: `Content-Disposition: inline`, or its
    Content-ID is referenced by the HTML body. `part` is the IMAP-style part number ("2.1");
    parts unpacked from a TNEF container are numbered below it ("3.t1").
    """

    filename: str
    content_type: str
    size: int
    sha256: str
    data: bytes = field(repr=False)
    content_id: str | None = None
    inline: bool = False
    charset: str | None = None
    part: str = ""


@dataclass(frozen=True, slots=True)
class CalendarEvent:
    """The fields of one VEVENT that a case page shows; the full text is in the attachment."""

    uid: str
    summary: str
    start: datetime | date | None
    end: datetime | date | None
    location: str
    organizer: str
    attendees: tuple[str, ...]
    sequence: int
    status: str


@dataclass(frozen=True, slots=True)
class CalendarInfo:
    """A parsed text/calendar part (RFC 5545 / iTIP RFC 5546); `part` names its attachment."""

    method: str
    events: tuple[CalendarEvent, ...]
    part: str


class AutoReason(enum.StrEnum):
    """Why a message looks machine-generated (RFC 3834 §2 and common practice)."""

    AUTO_SUBMITTED = "auto-submitted"  # Auto-Submitted other than "no" (RFC 3834 §5)
    PRECEDENCE = "precedence"  # Precedence: bulk / junk / list
    LIST_ID = "list-id"  # List-Id present (RFC 2919): mailing-list traffic
    AUTO_RESPONSE_SUPPRESS = "x-auto-response-suppress"  # Exchange: sender asks for no replies
    AUTOREPLY_HEADER = "x-autoreply"  # X-Autoreply / X-Autorespond (older responders)
    REPORT = "report"  # multipart/report: DSN (RFC 3464) or MDN (RFC 8098)
    DAEMON_SENDER = "daemon-sender"  # mailer-daemon / postmaster in From
    NOREPLY_SENDER = "noreply-sender"  # noreply / no-reply / donotreply in From


@dataclass(frozen=True, slots=True)
class AutoSignal:
    """One reason, with the header value or address that showed it (for the email log)."""

    reason: AutoReason
    evidence: str


@dataclass(frozen=True, slots=True)
class AutoSubmission:
    """The auto-submitted signals of a message; empty means it looks written by a person.

    Loop protection (issue 3) must never auto-respond when this is truthy.
    """

    signals: tuple[AutoSignal, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.signals)

    @property
    def is_automatic(self) -> bool:
        """True when any signal is present."""
        return bool(self.signals)

    @property
    def reasons(self) -> frozenset[AutoReason]:
        """The distinct reasons, for quick membership tests."""
        return frozenset(s.reason for s in self.signals)


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """One per-recipient block of a delivery-status report (RFC 3464 §2.3)."""

    final_recipient: str
    action: str
    status: str
    original_recipient: str | None = None
    diagnostic_code: str | None = None
    remote_mta: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """The parsed message/delivery-status of a DSN plus the returned message's Message-ID."""

    reporting_mta: str | None
    original_message_id: str | None
    original_envelope_id: str | None
    recipients: tuple[DsnRecipient, ...]


@dataclass(frozen=True, slots=True)
class Defect:
    """Something wrong with the input that parsing worked around; never fatal.

    `part` is the part number ("" for the message itself), `kind` a short stable code
    (e.g. "charset-fallback", "undecodable-part", "tnef", "header"), `detail` for people.
    """

    part: str
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class InboundEmail:
    """A parsed inbound message. Bodies are text; HTML is already sanitised (see `html.py`).

    Message-IDs keep their angle brackets (`<id@host>`) so that they compare equal to what
    `mime.message_id` returns and to the ones we generate.
    """

    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    subject: str
    from_address: str
    from_name: str
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    date: datetime | None
    text_body: str
    html_body: str
    text_from_html: bool
    text_truncated: bool
    html_truncated: bool
    headers: tuple[tuple[str, str], ...]
    headers_truncated: bool
    attachments: tuple[Attachment, ...]
    calendars: tuple[CalendarInfo, ...]
    auto_submitted: AutoSubmission
    is_dsn: bool
    delivery_report: DeliveryReport | None
    defects: tuple[Defect, ...]
    bcc: tuple[Address, ...] = ()

    def header(self, name: str) -> str | None:
        """The first kept header called `name` (case-insensitive), unfolded; None if absent."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None
