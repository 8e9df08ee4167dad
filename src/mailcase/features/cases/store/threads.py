"""Threading: which case a Message-ID belongs to, and who is on a case's thread.

Look-ups go through `case_message_ids` by SHA-256 of the Message-ID (one B-tree probe whatever
the number of cases).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, select

from mailcase.features.cases.decide import ThreadCase
from mailcase.features.cases.models import case_emails, case_message_ids, cases, contacts
from mailcase.storage.sql import insert_ignore

__all__ = [
    "case_ids_for_message_ids",
    "index_message_ids",
    "message_key",
    "thread_case",
]

_c = cases
_e = case_emails
_mid = case_message_ids
_ct = contacts

_PARTICIPANT_EMAILS = 500  # emails of a case read to know who is on its thread


def message_key(message_id: str) -> str:
    """The index key of a Message-ID: SHA-256 of the trimmed id (brackets kept)."""
    return hashlib.sha256(message_id.strip().encode("utf-8", "surrogatepass")).hexdigest()


def index_message_ids(
    conn: Connection, case_id: int, email_id: int | None, message_ids: Iterable[str]
) -> None:
    """Remember Message-IDs as belonging to `case_id` (duplicates are skipped)."""
    keys = {message_key(m) for m in message_ids if m and m.strip()}
    if not keys:
        return
    rows = [{"message_key": k, "case_id": case_id, "case_email_id": email_id} for k in keys]
    conn.execute(insert_ignore(conn, _mid), rows)


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
