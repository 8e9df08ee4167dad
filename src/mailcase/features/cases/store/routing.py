"""Routing addresses: where Email-to-Case accepts mail, and what a new case gets there.

Each one has a receiving address (`mailcase.storage.addresses`) so the SMTP listener accepts
it; adding, disabling and deleting a routing address does the same to its receiving address.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Row, delete, func, insert, select, update

from mailcase.errors import StorageError
from mailcase.features.cases.events import RoutingInfo
from mailcase.features.cases.models import routing_addresses
from mailcase.features.cases.routing import normalize_accept_entry
from mailcase.features.cases.store.cases import check_priority
from mailcase.storage import addresses
from mailcase.storage.db import begin_write
from mailcase.storage.models import receiving_addresses, utcnow

__all__ = [
    "add_routing",
    "delete_routing",
    "get_routing",
    "list_routing",
    "routing_map",
    "update_routing",
]

_r = routing_addresses
_ra = receiving_addresses

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
    prio = check_priority(priority)
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
        changes["priority"] = check_priority(changes["priority"])
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
