"""Cases: numbers, creation in the pipeline's transaction, status, and the read side.

Case numbers come from the `case_counter` row, bumped with ``UPDATE … RETURNING`` in the
creating transaction (gapless and concurrency-safe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, update

from mailcase.features.cases.models import (
    CASE_STATUSES,
    PRIORITIES,
    case_counter,
    case_emails,
    cases,
    contacts,
    routing_addresses,
)
from mailcase.storage._records import clean_text
from mailcase.storage.db import begin_write
from mailcase.storage.models import utcnow

__all__ = [
    "CaseRecord",
    "case_brief",
    "case_by_number",
    "check_priority",
    "check_status",
    "create_case",
    "format_number",
    "get_case",
    "list_cases",
    "next_number",
    "parse_number",
    "set_status",
    "update_case",
]

_r = routing_addresses
_c = cases
_e = case_emails
_ct = contacts

_NUMBER_WIDTH = 8


@dataclass(frozen=True, slots=True)
class CaseRecord:
    """A case as people see it."""

    id: int
    number: str
    subject: str
    description: str
    status: str
    priority: str
    origin: str
    contact_id: int | None
    contact_email: str | None
    contact_name: str | None
    supplied_name: str
    supplied_email: str
    owner: str | None
    queue: str | None
    routing_address: str | None
    parent_number: str | None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    email_count: int = 0


def format_number(number: int) -> str:
    """00001027."""
    return str(number).zfill(_NUMBER_WIDTH)


def parse_number(text: str | int) -> int:
    """The case number from "00001027" or 1027; ValueError otherwise."""
    if isinstance(text, int):
        return text
    value = text.strip()
    if not value.isdigit() or len(value) > 18:
        raise ValueError(f"not a case number: {text!r}")
    return int(value)


def next_number(conn: Connection) -> int:
    """The next case number, taken inside `conn`'s transaction (gapless, concurrency-safe)."""
    stmt = (
        update(case_counter)
        .where(case_counter.c.id == 1)
        .values(value=case_counter.c.value + 1)
        .returning(case_counter.c.value)
    )
    value = conn.execute(stmt).scalar()
    if value is None:  # the row is made by the migration; recreate it if someone deleted it
        top = conn.execute(select(func.coalesce(func.max(_c.c.number), 0))).scalar_one()
        conn.execute(insert(case_counter).values(id=1, value=int(top) + 1))
        return int(top) + 1
    return int(value)


def check_priority(priority: str) -> str:
    """The canonical spelling of a priority; ValueError naming the choices otherwise."""
    for p in PRIORITIES:
        if p.lower() == priority.strip().lower():
            return p
    raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")


def check_status(status: str) -> str:
    """The canonical spelling of a status; ValueError naming the choices otherwise."""
    for s in CASE_STATUSES:
        if s.lower() == status.strip().lower():
            return s
    raise ValueError(f"status must be one of {', '.join(CASE_STATUSES)}, not {status!r}")


def create_case(
    conn: Connection,
    *,
    subject: str,
    description: str,
    priority: str,
    origin: str,
    contact_id: int | None,
    supplied_name: str,
    supplied_email: str,
    owner: str | None,
    queue: str | None,
    routing_address_id: int | None,
    parent_case_id: int | None = None,
    status: str = "New",
) -> tuple[int, int]:
    """Insert a case in `conn`'s transaction; returns (id, number)."""
    number = next_number(conn)
    now = utcnow()
    case_id = conn.execute(
        insert(_c).returning(_c.c.id),
        {
            "number": number,
            "subject": clean_text(subject),
            "description": clean_text(description),
            "status": status,
            "priority": priority,
            "origin": origin,
            "contact_id": contact_id,
            "supplied_name": clean_text(supplied_name),
            "supplied_email": clean_text(supplied_email),
            "owner": owner,
            "queue": queue,
            "routing_address_id": routing_address_id,
            "parent_case_id": parent_case_id,
            "created_at": now,
            "updated_at": now,
        },
    ).scalar_one()
    return int(case_id), number


def case_brief(conn: Connection, case_id: int) -> tuple[int, str, str, str | None, str | None]:
    """(number, subject, status, owner, queue) of a case."""
    row = conn.execute(
        select(_c.c.number, _c.c.subject, _c.c.status, _c.c.owner, _c.c.queue).where(
            _c.c.id == case_id
        )
    ).one()
    return int(row[0]), str(row[1]), str(row[2]), row[3], row[4]


def set_status(conn: Connection, case_id: int, status: str) -> None:
    """Change a case's status in `conn`'s transaction (closing stamps `closed_at`)."""
    status = check_status(status)
    now = utcnow()
    conn.execute(
        update(_c)
        .where(_c.c.id == case_id)
        .values(status=status, updated_at=now, closed_at=now if status == "Closed" else None)
    )


# ------------------------------------------------------------------------------ read side
_parent = cases.alias("parent")

_CASE_COLUMNS = (
    _c.c.id,
    _c.c.number,
    _c.c.subject,
    _c.c.description,
    _c.c.status,
    _c.c.priority,
    _c.c.origin,
    _c.c.contact_id,
    _ct.c.email,
    _ct.c.name,
    _c.c.supplied_name,
    _c.c.supplied_email,
    _c.c.owner,
    _c.c.queue,
    _r.c.address,
    _parent.c.number,
    _c.c.created_at,
    _c.c.updated_at,
    _c.c.closed_at,
)


def _case_select() -> Any:
    return select(*_CASE_COLUMNS).select_from(
        _c.outerjoin(_ct, _ct.c.id == _c.c.contact_id)
        .outerjoin(_r, _r.c.id == _c.c.routing_address_id)
        .outerjoin(_parent, _parent.c.id == _c.c.parent_case_id)
    )


def _case(row: Row[Any], email_count: int = 0) -> CaseRecord:
    v = list(row)
    v[1] = format_number(int(v[1]))
    v[15] = None if v[15] is None else format_number(int(v[15]))
    return CaseRecord(*v, email_count=email_count)  # type: ignore[misc]


def list_cases(
    engine: Engine,
    status: Sequence[str] = (),
    *,
    limit: int = 100,
    before_number: int | None = None,
) -> list[CaseRecord]:
    """Cases, newest first; `status` filters (any of), `before_number` pages."""
    stmt = _case_select().order_by(_c.c.number.desc()).limit(limit)
    if status:
        stmt = stmt.where(_c.c.status.in_([check_status(s) for s in status]))
    if before_number is not None:
        stmt = stmt.where(_c.c.number < before_number)
    with engine.connect() as conn:
        return [_case(r) for r in conn.execute(stmt).all()]


def case_by_number(conn: Connection, number: int) -> int | None:
    """The id of case `number`, or None."""
    value = conn.execute(select(_c.c.id).where(_c.c.number == number)).scalar()
    return None if value is None else int(value)


def get_case(engine: Engine, number: int | str) -> CaseRecord | None:
    """One case by number, with its email count; None if there is none."""
    n = parse_number(number)
    with engine.connect() as conn:
        row = conn.execute(_case_select().where(_c.c.number == n)).first()
        if row is None:
            return None
        count = conn.execute(
            select(func.count()).select_from(_e).where(_e.c.case_id == row[0])
        ).scalar_one()
    return _case(row, int(count))


def update_case(
    engine: Engine,
    number: int | str,
    *,
    status: str | None = None,
    priority: str | None = None,
    owner: str | None = None,
    queue: str | None = None,
) -> CaseRecord | None:
    """Change status, priority, owner or queue; None if there is no such case."""
    n = parse_number(number)
    values: dict[str, Any] = {}
    if status is not None:
        values["status"] = check_status(status)
    if priority is not None:
        values["priority"] = check_priority(priority)
    if owner is not None:
        values["owner"] = owner or None
        if owner:
            values["queue"] = None
    if queue is not None:
        values["queue"] = queue or None
        if queue:
            values["owner"] = None
    with begin_write(engine) as conn:
        case_id = case_by_number(conn, n)
        if case_id is None:
            return None
        if values:
            now = utcnow()
            if "status" in values:
                values["closed_at"] = now if values["status"] == "Closed" else None
            conn.execute(update(_c).where(_c.c.id == case_id).values(**values, updated_at=now))
    return get_case(engine, n)
