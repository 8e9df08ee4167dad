"""Users and queues: create, read, change, and check a password (SQLAlchemy Core, both engines).

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second recommended
setting); a hash made with weaker parameters is replaced on the next successful login. Checking
the password of an unknown or inactive user still spends one hash verification, so a login's
timing does not tell which addresses are users.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine, Row, delete, func, insert, select, update

from mailcase.smtp.address import AddressError, parse_mailbox
from mailcase.storage.db import begin_write
from mailcase.storage.models import utcnow
from mailcase.storage.sql import insert_ignore

from .models import ROLES, queue_members, queues, users

__all__ = [
    "MIN_PASSWORD",
    "QueueRecord",
    "UserError",
    "UserRecord",
    "add_member",
    "add_queue",
    "add_user",
    "check_password",
    "get_queue",
    "get_user",
    "list_queues",
    "list_users",
    "queue_member_emails",
    "remove_member",
    "set_password",
    "update_user",
]

#: Shortest password accepted (NIST SP 800-63B asks for at least 8; admins guard mail setup).
MIN_PASSWORD = 10
_MAX_PASSWORD = 1024  # argon2 hashes any length; a bound keeps a login from costing more
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash("mailcase: no such user")


class UserError(ValueError):
    """A user or queue request that cannot be done; the message says what to change."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One user as read back (never with the password hash)."""

    id: int
    email: str
    name: str
    role: str
    active: bool
    can_log_in: bool
    time_zone: str
    created_at: datetime
    updated_at: datetime

    @property
    def display_name(self) -> str:
        """The name, or the address when no name was given (for "Dear …" and owner fields)."""
        return self.name or self.email

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601)."""
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        d["updated_at"] = self.updated_at.isoformat()
        return d


@dataclass(frozen=True, slots=True)
class QueueRecord:
    """One queue with the addresses of its active members."""

    id: int
    name: str
    email: str | None
    members: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        d = asdict(self)
        d["members"] = list(self.members)
        return d


def normalise_email(value: str) -> str:
    """The user's address, checked (RFC 5321 mailbox) and lower-cased."""
    try:
        mailbox = parse_mailbox(value.strip())
    except AddressError:
        raise UserError(f"{value!r} is not an email address like name@example.com") from None
    return mailbox.lower()


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > _MAX_PASSWORD:
        raise UserError(f"the password must have at most {_MAX_PASSWORD} characters")
    return _HASHER.hash(password)


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def _check_zone(zone: str) -> str:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(
            f"unknown time zone {zone!r}: use an IANA name such as Europe/Berlin"
        ) from None
    return zone


def _record(row: Row[Any]) -> UserRecord:
    m = row._mapping
    return UserRecord(
        id=int(m["id"]),
        email=m["email"],
        name=m["name"],
        role=m["role"],
        active=bool(m["active"]),
        can_log_in=m["password_hash"] is not None,
        time_zone=m["time_zone"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def add_user(
    engine: Engine,
    email: str,
    *,
    name: str = "",
    role: str = "agent",
    password: str | None = None,
    time_zone: str = "UTC",
) -> UserRecord:
    """Create a user. Without a password the user owns cases and gets mail but cannot log in."""
    address = normalise_email(email)
    values = {
        "email": address,
        "name": " ".join(name.split())[:255],
        "role": _check_role(role),
        "password_hash": None if password is None else _check_password(password),
        "time_zone": _check_zone(time_zone),
    }
    now = utcnow()
    with begin_write(engine) as conn:
        if conn.execute(select(users.c.id).where(users.c.email == address)).first():
            raise UserError(f"a user {address} exists already (see `mailcase user list`)")
        conn.execute(insert(users).values(**values, active=True, created_at=now, updated_at=now))
    found = get_user(engine, address)
    assert found is not None
    return found


def get_user(engine: Engine | Connection, email_or_id: str | int) -> UserRecord | None:
    """One user by address (any case) or id, or None."""
    stmt = select(users)
    if isinstance(email_or_id, int):
        stmt = stmt.where(users.c.id == email_or_id)
    else:
        stmt = stmt.where(users.c.email == email_or_id.strip().lower())
    if isinstance(engine, Connection):
        row = engine.execute(stmt).first()
    else:
        with engine.connect() as conn:
            row = conn.execute(stmt).first()
    return None if row is None else _record(row)


def list_users(engine: Engine, *, include_inactive: bool = True) -> list[UserRecord]:
    """Every user, by address."""
    stmt = select(users).order_by(users.c.email)
    if not include_inactive:
        stmt = stmt.where(users.c.active.is_(True))
    with engine.connect() as conn:
        return [_record(r) for r in conn.execute(stmt).all()]


def update_user(
    engine: Engine,
    email: str,
    *,
    name: str | None = None,
    role: str | None = None,
    active: bool | None = None,
    time_zone: str | None = None,
) -> UserRecord:
    """Change a user's name, role, active flag or time zone. Refuses to leave no active admin."""
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = " ".join(name.split())[:255]
    if role is not None:
        values["role"] = _check_role(role)
    if active is not None:
        values["active"] = active
    if time_zone is not None:
        values["time_zone"] = _check_zone(time_zone)
    address = email.strip().lower()
    with begin_write(engine) as conn:
        current = get_user(conn, address)
        if current is None:
            raise UserError(f"no user {address} (see `mailcase user list`)")
        losing_admin = current.role == "admin" and current.active and (
            values.get("role", "admin") != "admin" or values.get("active", True) is False
        )
        if losing_admin and _active_admins(conn) <= 1:
            raise UserError(f"{address} is the last active admin: make another admin first")
        if values:
            conn.execute(
                update(users).where(users.c.id == current.id).values(**values, updated_at=utcnow())
            )
    found = get_user(engine, address)
    assert found is not None
    return found


def _active_admins(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(users)
            .where(users.c.role == "admin", users.c.active.is_(True))
        ).scalar_one()
    )


def set_password(engine: Engine, email: str, password: str | None) -> UserRecord:
    """Set (or, with None, remove) a user's password."""
    digest = None if password is None else _check_password(password)
    address = email.strip().lower()
    with begin_write(engine) as conn:
        done = conn.execute(
            update(users)
            .where(users.c.email == address)
            .values(password_hash=digest, updated_at=utcnow())
        ).rowcount
    if not done:
        raise UserError(f"no user {address} (see `mailcase user list`)")
    found = get_user(engine, address)
    assert found is not None
    return found


def check_password(engine: Engine, email: str, password: str) -> UserRecord | None:
    """The active user with this address and password, or None (same cost either way)."""
    address = email.strip().lower()[:320]
    with engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.email == address)).first()
    stored = None if row is None else row._mapping["password_hash"]
    try:
        _HASHER.verify(stored or _DUMMY_HASH, password[:_MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        return None
    if row is None or stored is None or not row._mapping["active"]:
        return None
    if _HASHER.check_needs_rehash(stored):
        with begin_write(engine) as conn:
            conn.execute(
                update(users)
                .where(users.c.id == row._mapping["id"])
                .values(password_hash=_HASHER.hash(password[:_MAX_PASSWORD]))
            )
    return _record(row)


def add_queue(engine: Engine, name: str, *, email: str | None = None) -> QueueRecord:
    """Create a queue (its `email` gets alerts addressed to the queue as a whole)."""
    clean = " ".join(name.split())
    if not clean or len(clean) > 255:
        raise UserError("a queue name must have 1 to 255 characters")
    address = None if email is None else normalise_email(email)
    with begin_write(engine) as conn:
        if conn.execute(select(queues.c.id).where(queues.c.name == clean)).first():
            raise UserError(f"a queue {clean!r} exists already (see `mailcase queue list`)")
        conn.execute(insert(queues).values(name=clean, email=address, created_at=utcnow()))
    found = get_queue(engine, clean)
    assert found is not None
    return found


def _queue_record(conn: Connection, row: Row[Any]) -> QueueRecord:
    m = row._mapping
    members = conn.execute(
        select(users.c.email)
        .join(queue_members, queue_members.c.user_id == users.c.id)
        .where(queue_members.c.queue_id == m["id"], users.c.active.is_(True))
        .order_by(users.c.email)
    ).scalars()
    return QueueRecord(id=int(m["id"]), name=m["name"], email=m["email"], members=tuple(members))


def get_queue(engine: Engine | Connection, name: str) -> QueueRecord | None:
    """One queue by name, with its active members, or None."""
    stmt = select(queues).where(queues.c.name == " ".join(name.split()))
    if isinstance(engine, Connection):
        row = engine.execute(stmt).first()
        return None if row is None else _queue_record(engine, row)
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
        return None if row is None else _queue_record(conn, row)


def list_queues(engine: Engine) -> list[QueueRecord]:
    """Every queue, by name."""
    with engine.connect() as conn:
        return [
            _queue_record(conn, r)
            for r in conn.execute(select(queues).order_by(queues.c.name)).all()
        ]


def queue_member_emails(conn: Connection, name: str) -> list[str]:
    """The addresses of a queue's active members (empty for an unknown queue): whom an alert
    "to the queue's members" goes to."""
    found = get_queue(conn, name)
    return [] if found is None else list(found.members)


def _ids(conn: Connection, queue: str, email: str) -> tuple[int, int]:
    q = conn.execute(select(queues.c.id).where(queues.c.name == " ".join(queue.split()))).first()
    if q is None:
        raise UserError(f"no queue {queue!r} (see `mailcase queue list`)")
    u = conn.execute(select(users.c.id).where(users.c.email == email.strip().lower())).first()
    if u is None:
        raise UserError(f"no user {email} (see `mailcase user list`)")
    return int(q[0]), int(u[0])


def add_member(engine: Engine, queue: str, email: str) -> QueueRecord:
    """Make a user a member of a queue (no error when they are one already)."""
    with begin_write(engine) as conn:
        qid, uid = _ids(conn, queue, email)
        conn.execute(insert_ignore(conn, queue_members).values(queue_id=qid, user_id=uid))
    found = get_queue(engine, queue)
    assert found is not None
    return found


def remove_member(engine: Engine, queue: str, email: str) -> QueueRecord:
    """Take a user out of a queue (no error when they were not in it)."""
    with begin_write(engine) as conn:
        qid, uid = _ids(conn, queue, email)
        conn.execute(
            delete(queue_members).where(
                queue_members.c.queue_id == qid, queue_members.c.user_id == uid
            )
        )
    found = get_queue(engine, queue)
    assert found is not None
    return found
