"""The storage tables, declared once for SQLite and PostgreSQL.

Why these choices:

- Portable types only (Text, Integer, Boolean, JSON, LargeBinary); constraint names come from
  one naming convention so that migrations can refer to them on both engines.
- Timestamps are `UTCDateTime`: always timezone-aware UTC in Python. PostgreSQL stores
  ``timestamptz``; SQLite stores naive UTC text that sorts correctly. Naive datetimes are
  refused rather than guessed.
- Strings the peer chooses (HELO, MAIL FROM, …) are Text: a length limit in the schema would
  turn a long but harmless value into a failed commit, hence a 451, on PostgreSQL.
- `inbound_deliveries` has UNIQUE(message_pk, address): recording a delivery in the same
  transaction as its effect is what makes processing exactly-once, even after a crash.
- `settings_generation` holds one counter, bumped whenever receiving addresses change, so a
  running server can notice a CLI change with one cheap read.

The migrations in ``migrations/versions`` are the source of truth for the database; these
models must match them (a test compares the two on both engines).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from mailcase.storage.sql import BigId as _BigId

__all__ = [
    "ApiToken",
    "Base",
    "EmailLog",
    "InboundDelivery",
    "InboundMessage",
    "MESSAGE_STATES",
    "NAMING_CONVENTION",
    "ReceivingAddress",
    "SettingsGeneration",
    "SpoolTransfer",
    "UTCDateTime",
    "api_tokens",
    "email_log",
    "inbound_deliveries",
    "inbound_messages",
    "metadata",
    "receiving_addresses",
    "settings_generation",
    "spool_transfers",
    "utcnow",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: States of an inbound message: spooled, done, or set aside for a person to look at.
MESSAGE_STATES = ("received", "processed", "quarantined")


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python on both engines; naive values are an error."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: storage needs timezone-aware UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    """Declarative base sharing one MetaData with the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


metadata = Base.metadata


class ReceivingAddress(Base):
    """An address we accept mail for; `require_tls` refuses it over plaintext."""

    __tablename__ = "receiving_addresses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    require_tls: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboundMessage(Base):
    """One accepted message with its envelope and session facts, as spooled before the 250."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        CheckConstraint(
            "state IN ('received', 'processed', 'quarantined')", name="state_valid"
        ),
        # Serves "WHERE state = 'received' ORDER BY id" (claiming) and filtering by state.
        Index(None, "state", "id"),
        Index(None, "message_id"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    queue_id: Mapped[str] = mapped_column(String(64), unique=True)
    received_at: Mapped[datetime]
    client_ip: Mapped[str] = mapped_column(Text)
    helo: Mapped[str] = mapped_column(Text)
    mail_from: Mapped[str] = mapped_column(Text)
    rcpt_to: Mapped[list[str]] = mapped_column(JSON)
    tls_version: Mapped[str | None] = mapped_column(Text)
    tls_cipher: Mapped[str | None] = mapped_column(Text)
    tls_bits: Mapped[int | None] = mapped_column(Integer)
    requiretls: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    smtputf8: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    body_type: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    message_id: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), server_default=text("'received'"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None]
    # Fetched mail (issue 19): the authserv-ids whose verdicts count; NULL for SMTP mail.
    trusted_authserv_ids: Mapped[list[str] | None] = mapped_column(JSON)


class InboundContent(Base):
    """The bytes of one inbound message, apart from its row of facts.

    Kept in a table of their own, content the last column: SQLite then never rewrites the
    message's overflow pages when its state changes, and a zero-filled blob written in chunks
    (the spool's path for big messages) is never expanded in memory.
    """

    __tablename__ = "inbound_contents"

    message_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("inbound_messages.id", ondelete="CASCADE"), primary_key=True,
        autoincrement=False,
    )
    content: Mapped[bytes] = mapped_column(LargeBinary)


class InboundDelivery(Base):
    """A message delivered to one address; the unique pair makes processing exactly-once."""

    __tablename__ = "inbound_deliveries"
    __table_args__ = (UniqueConstraint("message_pk", "address"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    message_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("inbound_messages.id", ondelete="CASCADE")
    )
    address: Mapped[str] = mapped_column(String(320))
    delivered_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmailLog(Base):
    """One mail event (accepted, rejected, deferred, processed, quarantined …)."""

    __tablename__ = "email_log"
    __table_args__ = (
        Index(None, "time"),
        Index(None, "queue_id"),
        Index(None, "outcome"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    time: Mapped[datetime]
    direction: Mapped[str] = mapped_column(String(16))
    queue_id: Mapped[str | None] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(Text)
    helo: Mapped[str | None] = mapped_column(Text)
    mail_from: Mapped[str | None] = mapped_column(Text)
    rcpt_to: Mapped[list[str]] = mapped_column(JSON)
    tls_version: Mapped[str | None] = mapped_column(Text)
    tls_cipher: Mapped[str | None] = mapped_column(Text)
    requiretls: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    size: Mapped[int | None] = mapped_column(Integer)
    message_id: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    reply_code: Mapped[int | None] = mapped_column(Integer)
    reply_text: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    # Outbound facts (inbound rows leave them empty; `client_ip` and `helo` are inbound's).
    remote_host: Mapped[str | None] = mapped_column(Text)
    remote_ip: Mapped[str | None] = mapped_column(Text)
    remote_port: Mapped[int | None] = mapped_column(Integer)
    relay: Mapped[str | None] = mapped_column(Text)
    tls_mode: Mapped[str | None] = mapped_column(String(20))
    tls_verified: Mapped[bool | None] = mapped_column(Boolean)
    #: What a certificate was checked against: none, ca (later mta-sts, dane-ee, dane-ta).
    tls_basis: Mapped[str | None] = mapped_column(String(16))
    #: Which policy set the TLS mode (filled by the transport-security policy when it lands).
    tls_policy: Mapped[str | None] = mapped_column(String(32))
    tls_fallback: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int | None] = mapped_column(Integer)
    delay: Mapped[float | None] = mapped_column(Float)
    stage: Mapped[str | None] = mapped_column(String(16))


class ApiToken(Base):
    """An API token; only the SHA-256 (hex) of the secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]


class SpoolTransfer(Base):
    """How far the rows of one acceptor's spool file were moved into this database.

    `spool` is the file name plus the file's identity (see `storage.spoolfiles`); the ids are
    the last spool-file ids moved, committed in the same transaction as the moved rows.
    """

    __tablename__ = "spool_transfers"

    spool: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_message_id: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_log_id: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class SettingsGeneration(Base):
    """A single row (id 1) whose counter is bumped whenever receiving addresses change."""

    __tablename__ = "settings_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


# The Core tables, typed as Table, for insert()/update() on the hot and query paths.
receiving_addresses = cast(Table, ReceivingAddress.__table__)
inbound_messages = cast(Table, InboundMessage.__table__)
inbound_deliveries = cast(Table, InboundDelivery.__table__)
inbound_contents = cast(Table, InboundContent.__table__)
email_log = cast(Table, EmailLog.__table__)
api_tokens = cast(Table, ApiToken.__table__)
settings_generation = cast(Table, SettingsGeneration.__table__)
spool_transfers = cast(Table, SpoolTransfer.__table__)
