"""Contacts: the people cases are opened for (matched by address, case-insensitive)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select

from mailcase.errors import StorageError
from mailcase.features.cases.models import contacts
from mailcase.storage import addresses
from mailcase.storage.db import begin_write
from mailcase.storage.models import utcnow

__all__ = [
    "ContactRecord",
    "add_contact",
    "find_contact",
    "find_contacts",
    "list_contacts",
]

_ct = contacts


@dataclass(frozen=True, slots=True)
class ContactRecord:
    """A contact."""

    id: int
    email: str
    name: str
    created_at: datetime


def add_contact(engine: Engine, email: str, name: str = "") -> ContactRecord:
    """Add a contact; StorageError if the address is taken."""
    value = addresses.normalize(email)
    try:
        with begin_write(engine) as conn:
            conn.execute(insert(_ct).values(email=value, name=name.strip(), created_at=utcnow()))
    except Exception as e:
        raise StorageError(f"contact already exists: {value}") from e
    with engine.connect() as conn:
        row = conn.execute(select(_ct).where(_ct.c.email == value)).one()
    return ContactRecord(*row)


def list_contacts(engine: Engine, limit: int = 100) -> list[ContactRecord]:
    """Contacts by address."""
    with engine.connect() as conn:
        rows = conn.execute(select(_ct).order_by(_ct.c.email).limit(limit)).all()
    return [ContactRecord(*r) for r in rows]


def find_contacts(conn: Connection, emails: Iterable[str]) -> dict[str, ContactRecord]:
    """The contacts with these addresses (lower-cased keys), in one query per 500 addresses:
    a batch of messages looks its senders up together (issue 13)."""
    wanted = sorted({e.strip().lower() for e in emails if e.strip()})
    found: dict[str, ContactRecord] = {}
    for i in range(0, len(wanted), 500):
        rows = conn.execute(select(_ct).where(_ct.c.email.in_(wanted[i : i + 500]))).all()
        found.update((r.email, ContactRecord(*r)) for r in rows)
    return found


def find_contact(conn: Connection, email: str) -> ContactRecord | None:
    """The contact with this address (case-insensitive), or None."""
    row = conn.execute(select(_ct).where(_ct.c.email == email.strip().lower())).first()
    return None if row is None else ContactRecord(*row)
