"""Tables of Email-to-Case, declared on `mailcase.storage.models.Base`.

Why this shape:

- `routing_addresses` holds the Email-to-Case settings of an address; the address itself is a
  row of `receiving_addresses` too (linked by `receiving_address_id`), because that table is
  what the SMTP gateway accepts mail for and where `require_tls` lives.
- Case numbers come from `case_counter`, one row bumped with ``UPDATE … RETURNING`` inside the
  transaction that creates the case: gapless and safe under concurrency on both engines
  (PostgreSQL holds the row lock until commit; SQLite has one writer at a time).
- `case_emails.inbound_message_pk` is UNIQUE: an inbound message is stored on a case at most
  once, whatever retries or races happen (exactly-once, with the pipeline's delivery record).
  `dedupe_key` (Message-ID + content hash) is UNIQUE too: the same message arriving again
  (several aliases, a retried delivery) is recognised and creates nothing new.
- `case_message_ids` indexes every Message-ID we know on a case (inbound and the ones we
  generate for outbound mail) by the SHA-256 of the id, so threading is one B-tree look-up
  whatever the number of cases, and no id is too long for an index (PostgreSQL's B-tree limit).
- Attachment bytes are stored once per SHA-256 (`attachment_blobs`); `case_attachments` are
  the per-email rows (name, type, size, Content-ID, inline).

The migration ``0003_cases`` is the source of truth; a test compares the two on both engines.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailcase.storage.models import Base, utcnow
from mailcase.storage.sql import BigId as _BigId

__all__ = [
    "CASE_STATUSES",
    "DIRECTIONS",
    "PRIORITIES",
    "AttachmentBlob",
    "Case",
    "CaseAttachment",
    "CaseCounter",
    "CaseEmail",
    "CaseMessageId",
    "Contact",
    "RoutingAddress",
    "attachment_blobs",
    "case_attachments",
    "case_counter",
    "case_emails",
    "case_message_ids",
    "cases",
    "contacts",
    "routing_addresses",
]

#: Case statuses, as Salesforce names them.
CASE_STATUSES = ("New", "Working", "Escalated", "Closed")
#: Case priorities.
PRIORITIES = ("Low", "Medium", "High", "Urgent")
#: Directions of a case email.
DIRECTIONS = ("inbound", "outbound")


class RoutingAddress(Base):
    """Email-to-Case settings of one receiving address."""

    __tablename__ = "routing_addresses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    receiving_address_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("receiving_addresses.id", ondelete="SET NULL")
    )
    name: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(64), server_default=text("'Email'"))
    priority: Mapped[str] = mapped_column(String(16), server_default=text("'Medium'"))
    owner: Mapped[str | None] = mapped_column(Text)
    queue: Mapped[str | None] = mapped_column(Text)
    accept_from: Mapped[list[str]] = mapped_column(JSON)
    task_status: Mapped[str | None] = mapped_column(Text)
    save_headers: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    require_authenticated_sender: Mapped[bool] = mapped_column(
        Boolean, server_default=text("false")
    )
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CaseCounter(Base):
    """One row (id 1): the last case number handed out."""

    __tablename__ = "case_counter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class Contact(Base):
    """A person cases are about, matched by email address (stored lower-cased)."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(Text, server_default=text("''"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Case(Base):
    """A case; `number` is shown zero-padded to 8 digits (00001027)."""

    __tablename__ = "cases"
    __table_args__ = (
        CheckConstraint(
            "status IN ('New', 'Working', 'Escalated', 'Closed')", name="status_valid"
        ),
        Index(None, "status", "id"),
        Index(None, "contact_id"),
        Index(None, "parent_case_id"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, unique=True)
    subject: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), server_default=text("'New'"))
    priority: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(64))
    contact_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("contacts.id", ondelete="SET NULL")
    )
    supplied_name: Mapped[str] = mapped_column(Text, server_default=text("''"))
    supplied_email: Mapped[str] = mapped_column(Text, server_default=text("''"))
    owner: Mapped[str | None] = mapped_column(Text)
    queue: Mapped[str | None] = mapped_column(Text)
    routing_address_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("routing_addresses.id", ondelete="SET NULL")
    )
    parent_case_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("cases.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]


class CaseEmail(Base):
    """One email on a case, inbound or outbound, with its transport and auth facts."""

    __tablename__ = "case_emails"
    __table_args__ = (
        CheckConstraint("direction IN ('inbound', 'outbound')", name="direction_valid"),
        Index(None, "case_id", "id"),
        Index(None, "message_id"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    case_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("cases.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(16))
    from_address: Mapped[str] = mapped_column(Text)
    from_name: Mapped[str] = mapped_column(Text, server_default=text("''"))
    to_addresses: Mapped[list[Any]] = mapped_column(JSON)
    cc_addresses: Mapped[list[Any]] = mapped_column(JSON)
    subject: Mapped[str] = mapped_column(Text)
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str] = mapped_column(Text, server_default=text("''"))
    headers: Mapped[list[Any] | None] = mapped_column(JSON)
    message_id: Mapped[str | None] = mapped_column(Text)
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    reference_ids: Mapped[list[str]] = mapped_column(JSON)
    inbound_message_pk: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("inbound_messages.id", ondelete="SET NULL"), unique=True
    )
    dedupe_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    outbound_queue_id: Mapped[str | None] = mapped_column(String(64))
    routing_address: Mapped[str | None] = mapped_column(Text)
    mail_from: Mapped[str | None] = mapped_column(Text)
    client_ip: Mapped[str | None] = mapped_column(Text)
    helo: Mapped[str | None] = mapped_column(Text)
    tls_version: Mapped[str | None] = mapped_column(Text)
    tls_cipher: Mapped[str | None] = mapped_column(Text)
    requiretls: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    auth: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    authentication_results: Mapped[str | None] = mapped_column(Text)
    authenticated: Mapped[bool | None] = mapped_column(Boolean)
    sender_not_on_thread: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    text_truncated: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    html_truncated: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    headers_truncated: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CaseMessageId(Base):
    """A Message-ID known on a case, by SHA-256 of the id: the threading look-up."""

    __tablename__ = "case_message_ids"
    __table_args__ = (
        UniqueConstraint("message_key", "case_id"),
        Index(None, "case_id"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    message_key: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("cases.id", ondelete="CASCADE"))
    case_email_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("case_emails.id", ondelete="CASCADE")
    )


class AttachmentBlob(Base):
    """Attachment bytes, stored once per SHA-256."""

    __tablename__ = "attachment_blobs"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class CaseAttachment(Base):
    """An attachment of one case email (inline `cid:` images too)."""

    __tablename__ = "case_attachments"
    __table_args__ = (Index(None, "case_email_id"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    case_email_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("case_emails.id", ondelete="CASCADE")
    )
    blob_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("attachment_blobs.id"))
    filename: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    content_id: Mapped[str | None] = mapped_column(Text)
    inline: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    part: Mapped[str] = mapped_column(Text, server_default=text("''"))


routing_addresses = cast(Table, RoutingAddress.__table__)
case_counter = cast(Table, CaseCounter.__table__)
contacts = cast(Table, Contact.__table__)
cases = cast(Table, Case.__table__)
case_emails = cast(Table, CaseEmail.__table__)
case_message_ids = cast(Table, CaseMessageId.__table__)
attachment_blobs = cast(Table, AttachmentBlob.__table__)
case_attachments = cast(Table, CaseAttachment.__table__)
