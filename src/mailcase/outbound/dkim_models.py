"""The table of DKIM keys, on `mailcase.storage.models.Base`.

`dkim_keys`: one row per (domain, selector). The private key is stored encrypted (AES-GCM, key
derived from the server secret; see `mailcase.outbound.dkim`), so a database dump alone cannot
sign mail as our domains. `state` is what the last check of the DNS record found: a key is
`pending` until its published record matches, `active` while it is the one signing, `retired`
once a rotation replaced it.

The migration ``0005_outbound_extras`` is the source of truth (with the bounce tables of
`mailcase.outbound.bounces.models`); a test compares the two.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import (
    CheckConstraint,
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

__all__ = ["DKIM_ALGORITHMS", "DKIM_STATES", "DKIMKey", "dkim_keys"]

DKIM_ALGORITHMS = ("rsa", "ed25519")
#: pending: created, record not (yet) found; active: signing; retired: replaced by a rotation.
DKIM_STATES = ("pending", "active", "retired")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class DKIMKey(Base):
    """A DKIM key pair of one domain and selector; the private half encrypted."""

    __tablename__ = "dkim_keys"
    __table_args__ = (
        CheckConstraint(_in("algorithm", DKIM_ALGORITHMS), name="algorithm_valid"),
        CheckConstraint(_in("state", DKIM_STATES), name="state_valid"),
        UniqueConstraint("domain", "selector"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str] = mapped_column(String(253))
    selector: Mapped[str] = mapped_column(String(63))
    algorithm: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[str] = mapped_column(Text)
    private_key: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), server_default=text("'pending'"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    checked_at: Mapped[datetime | None]
    check_result: Mapped[str | None] = mapped_column(Text)
    activated_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]


dkim_keys = cast(Table, DKIMKey.__table__)
