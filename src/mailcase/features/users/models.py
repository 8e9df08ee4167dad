"""The `users`, `queues` and `queue_members` tables, declared on `mailcase.storage.models.Base`.

Why this shape:

- `email` is the login and the address notifications go to; it is stored lower-cased and
  unique, so "Agent@x" and "agent@x" are one user.
- `password_hash` is an argon2id PHC string (argon2-cffi), NULL for a user who cannot log in
  (made for ownership and notifications only).
- Users are deactivated, not deleted: cases, tasks and log rows keep naming them.
- `time_zone` is an IANA name: scheduled reports and reminders are sent in the recipient's time.

The migration ``0010_users`` is the source of truth; a test compares the two on both engines.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import BigInteger, Boolean, ForeignKey, String, Table, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from mailcase.storage.models import Base, utcnow
from mailcase.storage.sql import BigId as _BigId

__all__ = ["ROLES", "Queue", "QueueMember", "User", "queue_members", "queues", "users"]

#: The roles a user can have: admins set mail up, agents work cases.
ROLES = ("admin", "agent")


class User(Base):
    """One person who logs in, owns cases or receives notifications."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(Text, server_default=text("''"))
    role: Mapped[str] = mapped_column(String(16), server_default=text("'agent'"))
    password_hash: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    time_zone: Mapped[str] = mapped_column(String(64), server_default=text("'UTC'"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Queue(Base):
    """A named group of agents that cases can be routed to (the routing address's queue)."""

    __tablename__ = "queues"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class QueueMember(Base):
    """A user's membership of a queue."""

    __tablename__ = "queue_members"

    queue_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("queues.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


users = cast(Table, User.__table__)
queues = cast(Table, Queue.__table__)
queue_members = cast(Table, QueueMember.__table__)
