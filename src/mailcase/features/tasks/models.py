"""The `tasks` table, declared on `mailcase.storage.models.Base`.

Why this shape:

- `status` is free text ("Not Started", "In Progress", ...): it is whatever the routing address
  says, not a fixed list.
- `case_id` is ON DELETE SET NULL: a task outlives the case it was made for; it is indexed
  because the case page lists its tasks.

The migration ``0007_tasks`` is the source of truth; a test compares the two on both engines.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import BigInteger, ForeignKey, Index, String, Table, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from mailcase.storage.models import Base, utcnow
from mailcase.storage.sql import BigId as _BigId

__all__ = ["Task", "tasks"]


class Task(Base):
    """One task, optionally about a case."""

    __tablename__ = "tasks"
    __table_args__ = (Index(None, "case_id"), Index(None, "status", "id"))

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    subject: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(64))
    priority: Mapped[str] = mapped_column(String(16), server_default=text("'Medium'"))
    owner: Mapped[str | None] = mapped_column(Text)
    case_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("cases.id", ondelete="SET NULL")
    )
    description: Mapped[str] = mapped_column(Text, server_default=text("''"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


tasks = cast(Table, Task.__table__)
