"""The tables of mailbox sources, declared on `mailcase.storage.models.Base`.

Why this shape:

- `secret` is the password or OAuth2 bearer token sealed with `mailcase.secrets.seal` (AES-GCM
  under a key derived from the server secret, the source's name as associated data): a
  database dump alone does not give away mailbox credentials.
- `token` (random, fixed at creation) goes into the queue ids of the source's messages, so a
  source removed and added again under a reused id never collides with its predecessor.
- One `mail_source_folders` row per folder: UIDVALIDITY and the highest UID taken (RFC 3501
  §2.3.1.1). `last_uid` moves only after the message is in the spool and changed on the server.
- `state`/`last_error`/`failures`/`next_attempt_at` make failures visible (`source list`) and
  the back-off survive a restart.
- `trusted_authserv_ids`: whose Authentication-Results and ARC sets count for this mailbox's
  mail (`authcheck.trusted`); `skip_to`: where a message that cannot be taken is moved.
- One `mail_source_skipped` row per message that could not be taken (over the size limit,
  refused by the spool): it is not tried again, and `source show` says why.

The migrations ``0009_mail_sources`` and ``0014_mail_source_trust_and_skips`` are the source
of truth.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailcase.storage.models import Base, utcnow
from mailcase.storage.sql import BigId as _BigId

__all__ = [
    "MailSource",
    "MailSourceFolder",
    "MailSourceSkipped",
    "mail_source_folders",
    "mail_source_skipped",
    "mail_sources",
]




class MailSource(Base):
    """One IMAP mailbox whose mail becomes inbound mail to `address`."""

    __tablename__ = "mail_sources"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    security: Mapped[str] = mapped_column(String(16))  # tls | starttls | plaintext
    auth: Mapped[str] = mapped_column(String(16))  # password | xoauth2
    username: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)
    folders: Mapped[list[str]] = mapped_column(JSON)
    address: Mapped[str] = mapped_column(Text)
    after: Mapped[str] = mapped_column(String(16))  # seen | move | delete
    move_to: Mapped[str | None] = mapped_column(Text)
    paused: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    state: Mapped[str] = mapped_column(String(16), server_default=text("'new'"))
    last_error: Mapped[str | None] = mapped_column(Text)
    failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    last_ok_at: Mapped[datetime | None] = mapped_column()
    taken: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    trusted_authserv_ids: Mapped[list[str]] = mapped_column(JSON, server_default=text("'[]'"))
    skip_to: Mapped[str | None] = mapped_column(Text)


class MailSourceFolder(Base):
    """Where a source stands in one folder: UIDVALIDITY and the last UID taken."""

    __tablename__ = "mail_source_folders"

    source_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("mail_sources.id", ondelete="CASCADE"), primary_key=True
    )
    folder: Mapped[str] = mapped_column(String(255), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class MailSourceSkipped(Base):
    """A message that could not be taken, and why (left on the server, or moved)."""

    __tablename__ = "mail_source_skipped"
    __table_args__ = (Index("ix_mail_source_skipped_source_id", "source_id", "id"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    source_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("mail_sources.id", ondelete="CASCADE")
    )
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    moved_to: Mapped[str | None] = mapped_column(Text)
    skipped_at: Mapped[datetime] = mapped_column(default=utcnow)


mail_sources = cast(Table, MailSource.__table__)
mail_source_skipped = cast(Table, MailSourceSkipped.__table__)
mail_source_folders = cast(Table, MailSourceFolder.__table__)
