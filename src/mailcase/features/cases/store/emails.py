"""The emails of a case: writing them (with their attachments, bytes once per SHA-256),
finding the ones already stored (dedupe), and reading them back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, select, update

from mailcase.features.cases.models import (
    attachment_blobs,
    case_attachments,
    case_emails,
    cases,
)
from mailcase.features.cases.store.cases import case_by_number, parse_number
from mailcase.storage._records import clean_text
from mailcase.storage.models import utcnow
from mailcase.storage.sql import insert_ignore

__all__ = [
    "AttachmentRecord",
    "EmailRecord",
    "add_email",
    "dedupe_numbers",
    "existing_by_dedupe",
    "get_attachment",
    "list_emails",
    "store_attachments",
    "stored_for_message",
    "stored_message_pks",
]

_c = cases
_e = case_emails
_b = attachment_blobs
_a = case_attachments


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
        conn.execute(update(_c).where(_c.c.id == case_id).values(updated_at=values["created_at"]))
    return int(email_id)


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


def _upsert_blob(conn: Connection, sha256: str, data: bytes) -> int:
    values = {"sha256": sha256, "size": len(data), "data": data, "created_at": utcnow()}
    stmt = insert_ignore(conn, _b).values(**values)
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
