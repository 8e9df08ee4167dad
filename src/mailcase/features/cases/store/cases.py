"""Storage of Email-to-Case: routing addresses, cases, case emails, contacts, attachments.

Two kinds of function:

- with an Engine (the CLI and the API): each opens its own transaction (writes through
  `begin_write`) and returns frozen records;
- with a Connection (the pipeline, `cases reply`): they write inside the caller's transaction,
  so a case, its email, its Message-IDs, the delivery record and any queued reply commit
  together or not at all.

Threading look-ups go through `case_message_ids` by SHA-256 of the Message-ID (one B-tree probe
whatever the number of cases). Case numbers come from the `case_counter` row, bumped with
``UPDATE … RETURNING`` in the creating transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from mailcase.errors import StorageError
from mailcase.features.cases.decide import ThreadCase
from mailcase.features.cases.events import RoutingInfo
from mailcase.features.cases.models import (
    CASE_STATUSES,
    PRIORITIES,
    attachment_blobs,
    case_attachments,
    case_counter,
    case_emails,
    case_message_ids,
    cases,
    contacts,
    routing_addresses,
)
from mailcase.features.cases.routing import normalize_accept_entry
from mailcase.storage import addresses
from mailcase.storage._records import clean_text
from mailcase.storage.db import begin_write, is_postgresql
from mailcase.storage.models import receiving_addresses, utcnow

__all__ = [
    "AttachmentRecord",
    "CaseRecord",
    "ContactRecord",
    "EmailRecord",
    "add_contact",
    "add_email",
    "add_routing",
    "case_brief",
    "case_by_number",
    "case_ids_for_message_ids",
    "create_case",
    "dedupe_numbers",
    "delete_routing",
    "existing_by_dedupe",
    "find_contact",
    "format_number",
    "get_attachment",
    "get_case",
    "get_routing",
    "index_message_ids",
    "list_cases",
    "list_contacts",
    "list_emails",
    "list_routing",
    "message_key",
    "next_number",
    "parse_number",
    "routing_map",
    "set_status",
    "store_attachments",
    "stored_for_message",
    "stored_message_pks",
    "thread_case",
    "update_case",
    "update_routing",
]

_r = routing_addresses
_ra = receiving_addresses
_c = cases
_e = case_emails
_mid = case_message_ids
_ct = contacts
_b = attachment_blobs
_a = case_attachments

_NUMBER_WIDTH = 8
_PARTICIPANT_EMAILS = 500  # emails of a case read to know who is on its thread


# ------------------------------------------------------------------------------ records
@dataclass(frozen=True, slots=True)
class ContactRecord:
    """A contact."""

    id: int
    email: str
    name: str
    created_at: datetime


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


@dataclass(frozen=True, slots=True)
class AttachmentRecord:
    """One attachment of a case email (without its bytes)."""

    id: int
    filename: str
    content_type: str
    size: int
    content_id: str | None
    inline: bool
    sha256: str


@dataclass(frozen=True, slots=True)
class EmailRecord:
    """One email of a case."""

    id: int
    direction: str
    from_address: str
    from_name: str
    to: list[Any]
    cc: list[Any]
    subject: str
    text_body: str
    html_body: str
    headers: list[Any] | None
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    outbound_queue_id: str | None
    routing_address: str | None
    mail_from: str | None
    client_ip: str | None
    helo: str | None
    tls_version: str | None
    tls_cipher: str | None
    requiretls: bool
    auth: dict[str, Any] | None
    authentication_results: str | None
    authenticated: bool | None
    sender_not_on_thread: bool
    text_truncated: bool
    html_truncated: bool
    headers_truncated: bool
    created_at: datetime
    attachments: list[AttachmentRecord] = field(default_factory=list)


# ------------------------------------------------------------------------------ numbers
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


def message_key(message_id: str) -> str:
    """The index key of a Message-ID: SHA-256 of the trimmed id (brackets kept)."""
    return hashlib.sha256(message_id.strip().encode("utf-8", "surrogatepass")).hexdigest()


# ------------------------------------------------------------------------------ routing
_ROUTING_COLUMNS = (
    _r.c.id,
    _r.c.address,
    _r.c.name,
    _r.c.origin,
    _r.c.priority,
    _r.c.owner,
    _r.c.queue,
    _r.c.accept_from,
    _r.c.task_status,
    _r.c.save_headers,
    func.coalesce(_ra.c.require_tls, False),
    _r.c.require_authenticated_sender,
    _r.c.enabled,
)


def _routing_select() -> Any:
    return select(*_ROUTING_COLUMNS).select_from(
        _r.outerjoin(_ra, _ra.c.id == _r.c.receiving_address_id)
    )


def _routing(row: Row[Any]) -> RoutingInfo:
    values = list(row)
    values[7] = tuple(values[7] or ())
    values[10] = bool(values[10])
    return RoutingInfo(*values)


def _check_priority(priority: str) -> str:
    for p in PRIORITIES:
        if p.lower() == priority.strip().lower():
            return p
    raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")


def _check_status(status: str) -> str:
    for s in CASE_STATUSES:
        if s.lower() == status.strip().lower():
            return s
    raise ValueError(f"status must be one of {', '.join(CASE_STATUSES)}, not {status!r}")


def add_routing(
    engine: Engine,
    address: str,
    *,
    name: str | None = None,
    origin: str = "Email",
    priority: str = "Medium",
    owner: str | None = None,
    queue: str | None = None,
    accept_from: Sequence[str] = (),
    task_status: str | None = None,
    save_headers: bool = False,
    require_tls: bool = False,
    require_authenticated_sender: bool = False,
) -> RoutingInfo:
    """Add a routing address (and its receiving address, so SMTP accepts it).

    ValueError for bad input; StorageError "routing address already exists".
    """
    value = addresses.normalize(address)
    entries = [normalize_accept_entry(a) for a in accept_from]
    prio = _check_priority(priority)
    if owner and queue:
        raise ValueError("a routing address has an owner or a queue, not both")
    if get_routing(engine, value) is not None:
        raise StorageError(f"routing address already exists: {value}")
    record = addresses.get(engine, value)
    if record is None:
        try:
            record = addresses.add(engine, value, require_tls=require_tls)
        except StorageError:
            record = addresses.get(engine, value)
            if record is None:
                raise
    if require_tls and not record.require_tls:
        addresses.set_require_tls(engine, value, True)
    if not record.enabled:
        addresses.set_enabled(engine, value, True)
    now = utcnow()
    try:
        with begin_write(engine) as conn:
            conn.execute(
                insert(_r).values(
                    address=value,
                    receiving_address_id=record.id,
                    name=(name or value).strip(),
                    origin=origin.strip() or "Email",
                    priority=prio,
                    owner=owner or None,
                    queue=queue or None,
                    accept_from=entries,
                    task_status=task_status or None,
                    save_headers=save_headers,
                    require_authenticated_sender=require_authenticated_sender,
                    enabled=True,
                    created_at=now,
                    updated_at=now,
                )
            )
    except Exception as e:  # IntegrityError: another process added it first
        raise StorageError(f"routing address already exists: {value}") from e
    got = get_routing(engine, value)
    assert got is not None
    return got


def get_routing(engine: Engine, address: str) -> RoutingInfo | None:
    """One routing address, or None."""
    with engine.connect() as conn:
        row = conn.execute(_routing_select().where(_r.c.address == address.strip().lower())).first()
    return None if row is None else _routing(row)


def list_routing(engine: Engine) -> list[RoutingInfo]:
    """All routing addresses, by address."""
    with engine.connect() as conn:
        rows = conn.execute(_routing_select().order_by(_r.c.address)).all()
    return [_routing(r) for r in rows]


def routing_map(conn: Connection) -> dict[str, RoutingInfo]:
    """Enabled routing addresses by address, read in `conn`'s transaction."""
    rows = conn.execute(_routing_select().where(_r.c.enabled.is_(True))).all()
    return {info.address: info for info in map(_routing, rows)}


_UPDATABLE = {
    "name",
    "origin",
    "priority",
    "owner",
    "queue",
    "accept_from",
    "task_status",
    "save_headers",
    "require_authenticated_sender",
    "enabled",
}


def update_routing(engine: Engine, address: str, **changes: Any) -> RoutingInfo | None:
    """Change settings of a routing address (`require_tls` goes to its receiving address);
    None if it does not exist. Disabling also disables the receiving address (SMTP then
    refuses it), enabling enables it again."""
    value = address.strip().lower()
    current = get_routing(engine, value)
    if current is None:
        return None
    require_tls = changes.pop("require_tls", None)
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValueError(f"unknown routing setting(s): {', '.join(sorted(unknown))}")
    if "priority" in changes:
        changes["priority"] = _check_priority(changes["priority"])
    if "accept_from" in changes:
        changes["accept_from"] = [normalize_accept_entry(a) for a in changes["accept_from"]]
    owner = changes.get("owner", current.owner)
    queue = changes.get("queue", current.queue)
    if owner and queue:
        raise ValueError("a routing address has an owner or a queue, not both")
    if changes:
        with begin_write(engine) as conn:
            conn.execute(
                update(_r).where(_r.c.address == value).values(**changes, updated_at=utcnow())
            )
    if require_tls is not None:
        addresses.set_require_tls(engine, value, bool(require_tls))
    if "enabled" in changes:
        addresses.set_enabled(engine, value, bool(changes["enabled"]))
    return get_routing(engine, value)


def delete_routing(engine: Engine, address: str) -> bool:
    """Remove a routing address and its receiving address; False if there was none.

    Its cases stay (their routing link is cleared).
    """
    value = address.strip().lower()
    with begin_write(engine) as conn:
        n = conn.execute(delete(_r).where(_r.c.address == value)).rowcount
    if n:
        addresses.remove(engine, value)
    return bool(n)


# ------------------------------------------------------------------------------ contacts
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


def find_contact(conn: Connection, email: str) -> ContactRecord | None:
    """The contact with this address (case-insensitive), or None."""
    row = conn.execute(select(_ct).where(_ct.c.email == email.strip().lower())).first()
    return None if row is None else ContactRecord(*row)


# ------------------------------------------------------------------------------ cases (pipeline)
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


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean_json(v) for k, v in value.items()}
    return value


def add_email(conn: Connection, case_id: int, *, touch: bool = True, **row: Any) -> int:
    """Insert a case email in `conn`'s transaction and (`touch`) bump the case's
    `updated_at`; returns its id.

    Text values are cleaned (no NUL, no lone surrogate) so PostgreSQL never refuses the row.
    """
    values = {k: _clean_json(v) for k, v in row.items()}
    values.setdefault("created_at", utcnow())
    values.setdefault("reference_ids", [])
    values.setdefault("to_addresses", [])
    values.setdefault("cc_addresses", [])
    values["case_id"] = case_id
    # Parameters apart from the statement: its compiled form is cached (hot path).
    email_id = conn.execute(insert(_e).returning(_e.c.id), values).scalar_one()
    if touch:
        conn.execute(
            update(_c).where(_c.c.id == case_id).values(updated_at=values["created_at"])
        )
    return int(email_id)


def index_message_ids(
    conn: Connection, case_id: int, email_id: int | None, message_ids: Iterable[str]
) -> None:
    """Remember Message-IDs as belonging to `case_id` (duplicates are skipped)."""
    keys = {message_key(m) for m in message_ids if m and m.strip()}
    if not keys:
        return
    rows = [{"message_key": k, "case_id": case_id, "case_email_id": email_id} for k in keys]
    if is_postgresql(conn):
        stmt: Any = pg_insert(_mid).on_conflict_do_nothing()
    else:
        stmt = sqlite_insert(_mid).on_conflict_do_nothing()
    conn.execute(stmt, rows)


def case_ids_for_message_ids(conn: Connection, message_ids: Sequence[str]) -> dict[str, int]:
    """Message-ID → case id for those we know (the most recent case when several)."""
    keys = {message_key(m): m for m in message_ids if m and m.strip()}
    if not keys:
        return {}
    rows = conn.execute(
        select(_mid.c.message_key, _mid.c.case_id)
        .where(_mid.c.message_key.in_(list(keys)))
        .order_by(_mid.c.case_id)
    ).all()
    return {keys[k]: int(c) for k, c in rows}


def existing_by_dedupe(conn: Connection, dedupe_key: str) -> tuple[int, int] | None:
    """(case id, case number) of the email already stored with this dedupe key."""
    row = conn.execute(
        select(_e.c.case_id, _c.c.number)
        .select_from(_e.join(_c, _c.c.id == _e.c.case_id))
        .where(_e.c.dedupe_key == dedupe_key)
    ).first()
    return None if row is None else (int(row[0]), int(row[1]))


def stored_message_pks(conn: Connection, message_pks: Sequence[int]) -> set[int]:
    """Which of these inbound messages are already on a case (one query for a batch)."""
    if not message_pks:
        return set()
    rows = conn.execute(
        select(_e.c.inbound_message_pk).where(_e.c.inbound_message_pk.in_(list(message_pks)))
    ).scalars()
    return {int(r) for r in rows}


def dedupe_numbers(conn: Connection, keys: Sequence[str]) -> dict[str, int]:
    """Dedupe key → case number, for the keys already stored (one query for a batch)."""
    if not keys:
        return {}
    rows = conn.execute(
        select(_e.c.dedupe_key, _c.c.number)
        .select_from(_e.join(_c, _c.c.id == _e.c.case_id))
        .where(_e.c.dedupe_key.in_(list(keys)))
    ).all()
    return {str(k): int(n) for k, n in rows}


def stored_for_message(conn: Connection, message_pk: int) -> bool:
    """True when this inbound message is already on a case."""
    return (
        conn.execute(select(_e.c.id).where(_e.c.inbound_message_pk == message_pk)).first()
        is not None
    )


def thread_case(conn: Connection, case_id: int, own: Iterable[str] = ()) -> ThreadCase | None:
    """The case with who is on its thread: its contact, our own addresses (`own`), and the
    senders and recipients of its emails that were not flagged "sender not on thread".

    Flagged emails add no one: else a stranger who forged an In-Reply-To was flagged once and
    then, being the sender of an email on the case, never again (nor anyone they Cc'd)."""
    row = conn.execute(
        select(_c.c.id, _c.c.status, _c.c.supplied_email, _ct.c.email)
        .select_from(_c.outerjoin(_ct, _ct.c.id == _c.c.contact_id))
        .where(_c.c.id == case_id)
    ).first()
    if row is None:
        return None
    people = {a.lower() for a in own}
    for value in (row[2], row[3]):
        if value:
            people.add(str(value).lower())
    emails = conn.execute(
        select(_e.c.from_address, _e.c.to_addresses, _e.c.cc_addresses)
        .where(_e.c.case_id == case_id, _e.c.sender_not_on_thread.is_(False))
        .order_by(_e.c.id.desc())
        .limit(_PARTICIPANT_EMAILS)
    ).all()
    for frm, to, cc in emails:
        if frm:
            people.add(str(frm).lower())
        for item in [*(to or []), *(cc or [])]:
            addr = item.get("address") if isinstance(item, dict) else item
            if addr:
                people.add(str(addr).lower())
    return ThreadCase(int(row[0]), str(row[1]), frozenset(people))


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
    status = _check_status(status)
    now = utcnow()
    conn.execute(
        update(_c)
        .where(_c.c.id == case_id)
        .values(status=status, updated_at=now, closed_at=now if status == "Closed" else None)
    )


def _upsert_blob(conn: Connection, sha256: str, data: bytes) -> int:
    values = {"sha256": sha256, "size": len(data), "data": data, "created_at": utcnow()}
    if is_postgresql(conn):
        stmt: Any = pg_insert(_b).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite_insert(_b).values(**values).on_conflict_do_nothing()
    existing = conn.execute(select(_b.c.id).where(_b.c.sha256 == sha256)).scalar()
    if existing is not None:
        return int(existing)
    conn.execute(stmt)
    return int(conn.execute(select(_b.c.id).where(_b.c.sha256 == sha256)).scalar_one())


def store_attachments(conn: Connection, email_id: int, attachments: Iterable[Any]) -> int:
    """Store `mime.Attachment`-like values (bytes once per SHA-256); returns how many."""
    n = 0
    for att in attachments:
        data = bytes(att.data)
        sha = att.sha256 or hashlib.sha256(data).hexdigest()
        blob_id = _upsert_blob(conn, sha, data)
        conn.execute(
            insert(_a).values(
                case_email_id=email_id,
                blob_id=blob_id,
                filename=clean_text(att.filename or "attachment"),
                content_type=clean_text(att.content_type or "application/octet-stream"),
                size=len(data),
                content_id=None if att.content_id is None else clean_text(att.content_id),
                inline=bool(att.inline),
                part=clean_text(getattr(att, "part", "") or ""),
            )
        )
        n += 1
    return n


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
        stmt = stmt.where(_c.c.status.in_([_check_status(s) for s in status]))
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


_EMAIL_COLUMNS = (
    _e.c.id,
    _e.c.direction,
    _e.c.from_address,
    _e.c.from_name,
    _e.c.to_addresses,
    _e.c.cc_addresses,
    _e.c.subject,
    _e.c.text_body,
    _e.c.html_body,
    _e.c.headers,
    _e.c.message_id,
    _e.c.in_reply_to,
    _e.c.reference_ids,
    _e.c.outbound_queue_id,
    _e.c.routing_address,
    _e.c.mail_from,
    _e.c.client_ip,
    _e.c.helo,
    _e.c.tls_version,
    _e.c.tls_cipher,
    _e.c.requiretls,
    _e.c.auth,
    _e.c.authentication_results,
    _e.c.authenticated,
    _e.c.sender_not_on_thread,
    _e.c.text_truncated,
    _e.c.html_truncated,
    _e.c.headers_truncated,
    _e.c.created_at,
)


def list_emails(engine: Engine, number: int | str) -> list[EmailRecord] | None:
    """The emails of a case, oldest first, with their attachments; None if no such case."""
    n = parse_number(number)
    with engine.connect() as conn:
        case_id = case_by_number(conn, n)
        if case_id is None:
            return None
        rows = conn.execute(
            select(*_EMAIL_COLUMNS).where(_e.c.case_id == case_id).order_by(_e.c.id)
        ).all()
        ids = [int(r[0]) for r in rows]
        atts: dict[int, list[AttachmentRecord]] = {i: [] for i in ids}
        if ids:
            for a in conn.execute(
                select(
                    _a.c.case_email_id,
                    _a.c.id,
                    _a.c.filename,
                    _a.c.content_type,
                    _a.c.size,
                    _a.c.content_id,
                    _a.c.inline,
                    _b.c.sha256,
                )
                .select_from(_a.join(_b, _b.c.id == _a.c.blob_id))
                .where(_a.c.case_email_id.in_(ids))
                .order_by(_a.c.id)
            ).all():
                atts[int(a[0])].append(AttachmentRecord(*a[1:]))
    return [EmailRecord(*r, attachments=atts[int(r[0])]) for r in rows]  # type: ignore[call-arg]


def get_attachment(
    engine: Engine, number: int | str, attachment_id: int
) -> tuple[AttachmentRecord, bytes] | None:
    """An attachment of case `number` with its bytes; None unless it belongs to that case."""
    n = parse_number(number)
    with engine.connect() as conn:
        row = conn.execute(
            select(
                _a.c.id,
                _a.c.filename,
                _a.c.content_type,
                _a.c.size,
                _a.c.content_id,
                _a.c.inline,
                _b.c.sha256,
                _b.c.data,
            )
            .select_from(
                _a.join(_b, _b.c.id == _a.c.blob_id)
                .join(_e, _e.c.id == _a.c.case_email_id)
                .join(_c, _c.c.id == _e.c.case_id)
            )
            .where(and_(_a.c.id == attachment_id, _c.c.number == n))
        ).first()
    if row is None:
        return None
    return AttachmentRecord(*row[:7]), bytes(row[7])


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
        values["status"] = _check_status(status)
    if priority is not None:
        values["priority"] = _check_priority(priority)
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
