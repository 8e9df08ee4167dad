"""Tables of the outbound queue and of Email Relay, on `mailcase.storage.models.Base`.

Why this shape:

- `outbound_messages` holds one row of facts per enqueued message; its bytes live apart in
  `outbound_contents` (as inbound does), so state changes never rewrite the content pages.
- Delivery state is per recipient (`outbound_recipients`): one connection may deliver to some
  recipients of a domain and be refused for others, and a retry must only touch those still
  pending. The message's own `state` is a summary for listing and claiming.
- `outbound_attempts` has one row per recipient per attempt, written *before* the connection is
  opened (result "inflight") and completed after: a crash leaves the evidence behind, and the
  engine retries what was in flight (at-least-once, see `mailcase.delivery.engine`).
- `next_attempt_at` on the message is both the retry schedule and the claim lease: claiming a
  message moves it into the future, so a second node (PostgreSQL) or a restarted engine does not
  take it again before the lease runs out.
- Relays and their filters are data, not config: they are managed at run time through the CLI
  and the API. A relay password is stored for SMTP AUTH and never listed or logged.

The migration ``0002_outbound`` is the source of truth; a test compares the two on both engines.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
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

from mailcase.config import OUTBOUND_TLS_MODES
from mailcase.storage.models import Base, utcnow
from mailcase.storage.sql import BigId as _BigId

__all__ = [
    "ATTEMPT_RESULTS",
    "CATEGORIES",
    "MESSAGE_STATES",
    "RECIPIENT_STATES",
    "STAGES",
    "OutboundAttempt",
    "OutboundContent",
    "OutboundMessage",
    "OutboundRecipient",
    "Relay",
    "RelayFilter",
    "outbound_attempts",
    "outbound_contents",
    "outbound_messages",
    "outbound_recipients",
    "relay_filters",
    "relays",
]

#: Deliverability categories: "system" (password reset class), "auto" (auto-responses,
#: alerts), "user" (what a person wrote).
CATEGORIES = ("system", "auto", "user")
#: queued: some recipient still pending; held: the access level keeps it from leaving;
#: delivered: every recipient delivered; bounced: every recipient final, at least one not
#: delivered (bounced or suppressed).
MESSAGE_STATES = ("queued", "held", "delivered", "bounced")
#: queued: never tried; deferred: tried, transient failure, will retry; delivered; bounced:
#: permanent failure (or queue time ran out); suppressed: not sent on purpose (e.g. a known
#: hard-bounced address, set by the bounce processing).
RECIPIENT_STATES = ("queued", "delivered", "deferred", "bounced", "suppressed")
#: inflight: written before connecting; the others once the attempt ended.
ATTEMPT_RESULTS = ("inflight", "delivered", "transient", "permanent")
#: Where an attempt failed (RFC 5321 order); "route" is before any connection (DNS, policy).
STAGES = ("route", "connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data")
#: Outbound TLS modes (Deliverability), see `mailcase.tls.outbound`.


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class OutboundMessage(Base):
    """One message to send: envelope sender, category, schedule and summary state."""

    __tablename__ = "outbound_messages"
    __table_args__ = (
        CheckConstraint(_in("category", CATEGORIES), name="category_valid"),
        CheckConstraint(_in("state", MESSAGE_STATES), name="state_valid"),
        # Serves the claim: WHERE state = 'queued' AND next_attempt_at <= now ORDER BY it.
        Index(None, "state", "next_attempt_at"),
        Index(None, "message_id"),
        Index(None, "source"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    queue_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    mail_from: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(16), server_default=text("'user'"))
    source: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), server_default=text("'queued'"))
    next_attempt_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    finished_at: Mapped[datetime | None]


class OutboundContent(Base):
    """The bytes of one outbound message (CRLF line ends), apart from its facts."""

    __tablename__ = "outbound_contents"

    message_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("outbound_messages.id", ondelete="CASCADE"), primary_key=True,
        autoincrement=False,
    )
    content: Mapped[bytes] = mapped_column(LargeBinary)


class OutboundRecipient(Base):
    """One recipient of one message with its own delivery state and last reply."""

    __tablename__ = "outbound_recipients"
    __table_args__ = (
        CheckConstraint(_in("state", RECIPIENT_STATES), name="state_valid"),
        UniqueConstraint("message_pk", "address"),
        Index(None, "address"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    message_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("outbound_messages.id", ondelete="CASCADE")
    )
    address: Mapped[str] = mapped_column(Text)
    domain: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), server_default=text("'queued'"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_stage: Mapped[str | None] = mapped_column(String(16))
    last_reply_code: Mapped[int | None] = mapped_column(Integer)
    last_reply: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime | None]


class OutboundAttempt(Base):
    """One delivery attempt for one recipient, with everything the email log shows."""

    __tablename__ = "outbound_attempts"
    __table_args__ = (
        CheckConstraint(_in("result", ATTEMPT_RESULTS), name="result_valid"),
        Index(None, "message_pk"),
        Index(None, "result"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    message_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("outbound_messages.id", ondelete="CASCADE")
    )
    recipient_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("outbound_recipients.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    result: Mapped[str] = mapped_column(String(16), server_default=text("'inflight'"))
    relay: Mapped[str | None] = mapped_column(Text)
    remote_host: Mapped[str | None] = mapped_column(Text)
    remote_ip: Mapped[str | None] = mapped_column(Text)
    remote_port: Mapped[int | None] = mapped_column(Integer)
    tls_mode: Mapped[str | None] = mapped_column(String(20))
    tls_version: Mapped[str | None] = mapped_column(Text)
    tls_cipher: Mapped[str | None] = mapped_column(Text)
    tls_verified: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    verified_by: Mapped[str | None] = mapped_column(String(16))
    stage: Mapped[str | None] = mapped_column(String(16))
    #: Why the attempt went on in plaintext after STARTTLS failed (`preferred` mode).
    tls_fallback: Mapped[str | None] = mapped_column(Text)
    reply_code: Mapped[int | None] = mapped_column(Integer)
    reply_text: Mapped[str | None] = mapped_column(Text)
    seconds_in_queue: Mapped[float | None] = mapped_column(Float)


class Relay(Base):
    """A smarthost (Email Relay). `host_kind` "mx" means: the MX hosts of domain `host`."""

    __tablename__ = "relays"
    __table_args__ = (
        CheckConstraint(_in("tls_mode", OUTBOUND_TLS_MODES), name="tls_mode_valid"),
        CheckConstraint("host_kind IN ('host', 'mx')", name="host_kind_valid"),
        CheckConstraint(
            "auth_mechanism IS NULL OR auth_mechanism IN ('PLAIN', 'LOGIN')",
            name="auth_mechanism_valid",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    host: Mapped[str] = mapped_column(Text)
    host_kind: Mapped[str] = mapped_column(String(8), server_default=text("'host'"))
    port: Mapped[int] = mapped_column(Integer, server_default=text("25"))
    tls_mode: Mapped[str] = mapped_column(String(20), server_default=text("'preferred'"))
    auth_mechanism: Mapped[str | None] = mapped_column(String(8))
    username: Mapped[str | None] = mapped_column(Text)
    # Encrypted: "aesgcm1:" + base64 (mailcase.delivery.relays.seal_password), never clear text.
    password: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RelayFilter(Base):
    """Which mail goes to which relay: domain patterns, priority (lowest first), active."""

    __tablename__ = "relay_filters"
    __table_args__ = (Index(None, "priority"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    relay_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("relays.id", ondelete="CASCADE")
    )
    sender_pattern: Mapped[str] = mapped_column(Text, server_default=text("'*'"))
    recipient_pattern: Mapped[str] = mapped_column(Text, server_default=text("'*'"))
    priority: Mapped[int] = mapped_column(Integer, server_default=text("100"))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


outbound_messages = cast(Table, OutboundMessage.__table__)
outbound_contents = cast(Table, OutboundContent.__table__)
outbound_recipients = cast(Table, OutboundRecipient.__table__)
outbound_attempts = cast(Table, OutboundAttempt.__table__)
relays = cast(Table, Relay.__table__)
relay_filters = cast(Table, RelayFilter.__table__)
