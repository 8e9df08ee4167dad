"""Receiving addresses: the addresses we accept mail for, and the generation counter.

Every change bumps ``settings_generation`` in the same transaction, so a running server polls
`generation` (one indexed read) and reloads the addresses only when the CLI or the web API
changed something. Addresses are stored lowercased and compared that way.

Functions take an Engine and return `AddressRecord` values (frozen dataclasses).
Malformed input raises ValueError; database conflicts raise StorageError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection, Engine, Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from mailcase.errors import StorageError
from mailcase.storage.db import begin_write
from mailcase.storage.models import receiving_addresses, settings_generation, utcnow

__all__ = [
    "AddressRecord",
    "AddressSnapshot",
    "add",
    "bump_generation",
    "generation",
    "generation_in",
    "get",
    "list_addresses",
    "normalize",
    "remove",
    "set_enabled",
    "set_require_tls",
    "snapshot",
]

_t = receiving_addresses
_gen = settings_generation
_MAX_LEN = 320  # RFC 5321 §4.5.3.1: local part 64 + "@" + domain 255


@dataclass(frozen=True, slots=True)
class AddressRecord:
    """One receiving address."""

    id: int
    address: str
    require_tls: bool
    enabled: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AddressSnapshot:
    """All addresses with the generation they belong to, read in one transaction."""

    generation: int
    addresses: Mapping[str, AddressRecord]


def normalize(address: str) -> str:
    """Lowercased, trimmed `address`; ValueError if it cannot be a mailbox."""
    value = address.strip().lower()
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or len(value) > _MAX_LEN:
        raise ValueError(f"not an email address: {address!r}")
    if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ValueError(f"email address contains whitespace or control characters: {address!r}")
    return value


def _record(row: Row[*tuple[Any, ...]]) -> AddressRecord:
    return AddressRecord(*row)


_COLUMNS = (_t.c.id, _t.c.address, _t.c.require_tls, _t.c.enabled, _t.c.created_at)


def _bump(conn: Connection) -> None:
    conn.execute(update(_gen).where(_gen.c.id == 1).values(generation=_gen.c.generation + 1))


def bump_generation(conn: Connection) -> None:
    """Tell every process that settings they cache changed (in `conn`'s transaction): the
    generation is read cheaply where a cache is used (addresses, DKIM keys)."""
    _bump(conn)


def generation_in(conn: Connection) -> int:
    """The settings generation, read in `conn` (see `generation`)."""
    return int(conn.execute(select(_gen.c.generation).where(_gen.c.id == 1)).scalar_one())


def add(
    engine: Engine, address: str, require_tls: bool = False, *, enabled: bool = True
) -> AddressRecord:
    """Add an address; StorageError "address already exists" if it is there."""
    value = normalize(address)
    try:
        with begin_write(engine) as conn:
            conn.execute(
                insert(_t).values(
                    address=value, require_tls=require_tls, enabled=enabled, created_at=utcnow()
                )
            )
            _bump(conn)
            row = conn.execute(select(*_COLUMNS).where(_t.c.address == value)).one()
    except IntegrityError:
        raise StorageError(f"address already exists: {value}") from None
    return _record(row)


def get(engine: Engine, address: str) -> AddressRecord | None:
    """The address, or None."""
    with engine.connect() as conn:
        row = conn.execute(select(*_COLUMNS).where(_t.c.address == normalize(address))).first()
    return None if row is None else _record(row)


def list_addresses(engine: Engine) -> list[AddressRecord]:
    """All addresses, sorted."""
    with engine.connect() as conn:
        rows = conn.execute(select(*_COLUMNS).order_by(_t.c.address)).all()
    return [_record(r) for r in rows]


def remove(engine: Engine, address: str) -> bool:
    """Delete the address; False if there was none."""
    with begin_write(engine) as conn:
        n = conn.execute(delete(_t).where(_t.c.address == normalize(address))).rowcount
        if n:
            _bump(conn)
    return bool(n)


def _set(engine: Engine, address: str, **values: bool) -> bool:
    with begin_write(engine) as conn:
        n = conn.execute(
            update(_t).where(_t.c.address == normalize(address)).values(**values)
        ).rowcount
        if n:
            _bump(conn)
    return bool(n)


def set_require_tls(engine: Engine, address: str, require_tls: bool) -> bool:
    """Change `require_tls`; False if the address does not exist."""
    return _set(engine, address, require_tls=require_tls)


def set_enabled(engine: Engine, address: str, enabled: bool) -> bool:
    """Enable or disable the address; False if it does not exist."""
    return _set(engine, address, enabled=enabled)


def generation(engine: Engine) -> int:
    """The settings generation: changes whenever any receiving address changes."""
    with engine.connect() as conn:
        return int(conn.execute(select(_gen.c.generation).where(_gen.c.id == 1)).scalar_one())


def snapshot(engine: Engine) -> AddressSnapshot:
    """Generation and all addresses from one read transaction (consistent with each other)."""
    with engine.connect() as conn, conn.begin():
        gen = int(conn.execute(select(_gen.c.generation).where(_gen.c.id == 1)).scalar_one())
        rows = conn.execute(select(*_COLUMNS).order_by(_t.c.address)).all()
    records = [_record(r) for r in rows]
    return AddressSnapshot(gen, MappingProxyType({r.address: r for r in records}))
