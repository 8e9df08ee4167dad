"""Tables of bounce handling, on `mailcase.storage.models.Base`.

Why this shape:

- `bounced_addresses` is the suppression list: one row per address that hard-bounced (or was
  suppressed by hand); sending to it is blocked until the row is cleared.
- `bounce_events` keeps every bounce we learnt of (hard or soft, from an inbound DSN or from our
  own delivery), UNIQUE per (source, recipient) so processing a DSN twice records it once.
- `verp_keys` holds the key that signs VERP return paths. It lives in the database, not in the
  server-secret file, because the RCPT check runs in every acceptor process and every node of a
  shared PostgreSQL database, which see the database but not necessarily the same data_dir. A
  stolen key only lets someone mark addresses as bounced, which write access already allows.

The migration ``0005_outbound_extras`` is the source of truth (with the DKIM table of
`mailcase.outbound.dkim_models`); a test compares the two.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import (
    CheckConstraint,
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
    "BOUNCE_KINDS",
    "BounceEvent",
    "BouncedAddress",
    "VerpKey",
    "bounce_events",
    "bounced_addresses",
    "verp_keys",
]

#: hard: permanent (5.x.x), the address is suppressed; soft: recorded only.
BOUNCE_KINDS = ("hard", "soft")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class BouncedAddress(Base):
    """An address mail is no longer sent to (hard bounce or by hand) until cleared."""

    __tablename__ = "bounced_addresses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    status: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    queue_id: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))
    bounces: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    first_bounced_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_bounced_at: Mapped[datetime] = mapped_column(default=utcnow)


class BounceEvent(Base):
    """One bounce of one recipient, as a DSN (or our own delivery) reported it."""

    __tablename__ = "bounce_events"
    __table_args__ = (
        CheckConstraint(_in("kind", BOUNCE_KINDS), name="kind_valid"),
        UniqueConstraint("source", "recipient"),
        Index(None, "recipient"),
        Index(None, "outbound_queue_id"),
        Index(None, "time"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    time: Mapped[datetime] = mapped_column(default=utcnow)
    #: "dsn:<inbound queue id>" or "delivery:<outbound queue id>".
    source: Mapped[str] = mapped_column(String(100))
    recipient: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(8))
    status: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str | None] = mapped_column(String(16))
    outbound_queue_id: Mapped[str | None] = mapped_column(String(64))
    message_id: Mapped[str | None] = mapped_column(Text)
    remote_mta: Mapped[str | None] = mapped_column(Text)
    diagnostic: Mapped[str | None] = mapped_column(Text)


class VerpKey(Base):
    """The key signing VERP return paths (one row, id 1)."""

    __tablename__ = "verp_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


bounced_addresses = cast(Table, BouncedAddress.__table__)
bounce_events = cast(Table, BounceEvent.__table__)
verp_keys = cast(Table, VerpKey.__table__)
