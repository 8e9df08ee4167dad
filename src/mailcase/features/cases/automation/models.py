"""Tables of the Email-to-Case automation: auto-response rules, loop and limit counters.

Why this shape:

- `auto_response_rules` are ordered by `position` (then id): the first enabled rule whose
  criteria all match chooses the template. Criteria left empty match anything.
- `automation_loop_hits` keeps one row per message seen by the case-creation gate, keyed by a
  fingerprint of sender, subject and body: "more than N in W seconds" is one indexed count.
  Rows older than the window are deleted as new ones arrive, so the table stays small.
- `automation_sent` records every automatic message we queued (auto-reply, non-delivery
  notice, owner notification) with its recipient: the per-sender limit is one indexed count,
  and the email log can point at the outbound queue id.
- `automation_daily_counts` counts cases created per UTC day: the daily limit reads one row
  instead of counting a table of a million cases.
- `automation_address_settings` holds per-routing-address switches (notify the owner).

The migration ``0004_case_automation`` is the source of truth; a test compares the two.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import (
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
    "SENT_KINDS",
    "AutoResponseRule",
    "AutomationAddressSetting",
    "AutomationDailyCount",
    "AutomationLoopHit",
    "AutomationSent",
    "auto_response_rules",
    "automation_address_settings",
    "automation_daily_counts",
    "automation_loop_hits",
    "automation_sent",
]

#: Kinds of automatic mail recorded in `automation_sent`.
SENT_KINDS = ("auto-reply", "bounce", "notification")


class AutoResponseRule(Base):
    """One auto-response rule entry: criteria and the template it chooses."""

    __tablename__ = "auto_response_rules"
    __table_args__ = (Index(None, "position", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    position: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    routing_address: Mapped[str | None] = mapped_column(String(320))
    sender_domain: Mapped[str | None] = mapped_column(String(255))
    subject_contains: Mapped[str | None] = mapped_column(Text)
    from_name: Mapped[str] = mapped_column(Text, server_default=text("''"))
    subject_template: Mapped[str] = mapped_column(Text)
    text_template: Mapped[str] = mapped_column(Text)
    html_template: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AutomationLoopHit(Base):
    """One message seen by the case-creation gate (for loop detection)."""

    __tablename__ = "automation_loop_hits"
    __table_args__ = (
        Index(None, "routing_address", "fingerprint", "time"),
        Index(None, "time"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    time: Mapped[datetime]
    routing_address: Mapped[str] = mapped_column(String(320))
    fingerprint: Mapped[str] = mapped_column(String(64))


class AutomationSent(Base):
    """One automatic message queued: auto-reply, non-delivery notice or notification."""

    __tablename__ = "automation_sent"
    __table_args__ = (Index(None, "recipient", "kind", "time"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    time: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(320))
    case_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("cases.id", ondelete="SET NULL")
    )
    rule_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("auto_response_rules.id", ondelete="SET NULL")
    )
    outbound_queue_id: Mapped[str | None] = mapped_column(String(64))
    message_id: Mapped[str | None] = mapped_column(Text)


class AutomationDailyCount(Base):
    """Cases created on one UTC day (`day` as YYYY-MM-DD)."""

    __tablename__ = "automation_daily_counts"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    cases: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class AutomationAddressSetting(Base):
    """Per-routing-address automation switches; None means "use the global setting"."""

    __tablename__ = "automation_address_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    notify_owner: Mapped[bool | None] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


auto_response_rules = cast(Table, AutoResponseRule.__table__)
automation_loop_hits = cast(Table, AutomationLoopHit.__table__)
automation_sent = cast(Table, AutomationSent.__table__)
automation_daily_counts = cast(Table, AutomationDailyCount.__table__)
automation_address_settings = cast(Table, AutomationAddressSetting.__table__)
