"""Email Relay: relays (smarthosts) and the domain filters that send mail through them.

Stored in the database (tables in `mailcase.outbound.models`), managed with
`mailcase relay ...` and /api/v1/relays, /api/v1/relay-filters. The engine reads a snapshot
(`load_table`) each round, so a change applies to the next claimed messages.

Rules kept here, whoever calls:
- host is a host name, an IP address, or ``mx:DOMAIN`` (deliver to that domain's MX hosts);
- port 465 means implicit TLS (RFC 8314); any other port uses STARTTLS as the mode says;
- AUTH (PLAIN or LOGIN) forces ``required_verify``: credentials never go over plaintext or to
  a server whose certificate was not checked;
- the password is stored for AUTH encrypted (`seal_password`: AES-GCM under a key derived from
  the server secret, bound to the relay's name), never in clear: a database dump or replica
  alone does not give the relay's credentials; it is never returned by
  `list_relays`/`get_relay`, nor logged;
- filters: sender and recipient domain patterns (comma-separated; ``example.com``,
  ``*.example.com`` = subdomains only, ``*`` = any), priority (lowest first; unique, as in
  Salesforce, so that which filter wins is never a tie), active; the first active filter of
  an active relay that matches wins; no match: direct MX.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from mailcase.config import OUTBOUND_TLS_MODES, Settings
from mailcase.errors import StorageError
from mailcase.outbound.models import relay_filters, relays
from mailcase.storage.db import begin_write
from mailcase.storage.models import utcnow
from mailcase.tls.outbound import domain_matches

__all__ = [
    "RelayError",
    "RelayInfo",
    "RelayTable",
    "add_filter",
    "add_relay",
    "get_relay",
    "is_ip",
    "list_filters",
    "list_relays",
    "load_table",
    "parse_patterns",
    "remove_filter",
    "open_password",
    "remove_relay",
    "seal_password",
    "set_relay_active",
]

#: HKDF label of the relay password key, and the marker of a sealed password in the column.
#: Migration 0008 writes the same format (spelled out there): change both or neither.
PASSWORD_INFO = b"mailcase relay password v1"
SEALED_PREFIX = "aesgcm1:"

_PUBLIC = ("id", "name", "host", "host_kind", "port", "tls_mode", "auth_mechanism", "username",
           "active", "created_at")


class RelayError(StorageError):
    """A relay or filter cannot be stored as given (the message says what to change)."""


@dataclass(frozen=True, slots=True)
class RelayInfo:
    """What the engine needs of a relay (with the password, which it never shows)."""

    id: int
    name: str
    host: str
    host_kind: str
    port: int
    tls_mode: str
    auth_mechanism: str | None
    username: str | None
    password: str | None = field(repr=False)
    #: Why the relay cannot be used now (its password does not decrypt): its mail is deferred
    #: with this reason, while mail for other routes still goes.
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class _Filter:
    relay_id: int
    senders: tuple[str, ...]
    recipients: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RelayTable:
    """A snapshot of the active relays and filters, in match order."""

    relays: dict[int, RelayInfo]
    filters: tuple[_Filter, ...]

    def select(self, sender_domain: str, recipient_domain: str) -> RelayInfo | None:
        """The relay of the first matching filter, or None (deliver by MX)."""
        for f in self.filters:
            if _any(f.senders, sender_domain) and _any(f.recipients, recipient_domain):
                return self.relays[f.relay_id]
        return None


def _any(patterns: tuple[str, ...], domain: str) -> bool:
    return any(domain_matches(p, domain) for p in patterns)


def parse_patterns(text: str) -> tuple[str, ...]:
    """Comma-separated domain patterns; empty means ``*``. Raises RelayError."""
    out: list[str] = []
    for raw in text.split(","):
        p = raw.strip().lower().rstrip(".")
        if not p:
            continue
        bare = p[2:] if p.startswith("*.") else p
        if p != "*" and (not bare or "*" in bare or "@" in bare or any(c.isspace() for c in bare)):
            raise RelayError(
                f"{raw.strip()!r} is not a domain pattern: use example.com, *.example.com or *"
            )
        out.append(p)
    return tuple(out) or ("*",)


def _check_host(host: str) -> tuple[str, str]:
    host = host.strip()
    kind = "host"
    if host.lower().startswith("mx:"):
        kind, host = "mx", host[3:].strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() or c in "/@:" for c in host if not is_ip(host)):
        raise RelayError(f"relay host {host!r}: use a host name, an IP address or mx:DOMAIN")
    if kind == "mx" and is_ip(host):
        raise RelayError("mx: needs a domain name, not an IP address")
    return host.lower().rstrip("."), kind


def is_ip(host: str) -> bool:
    """True for an IPv4 or IPv6 address literal (a host that needs no DNS)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def add_relay(
    engine: Engine,
    settings: Settings,
    *,
    name: str,
    host: str,
    port: int = 25,
    tls_mode: str = "preferred",
    auth_mechanism: str | None = None,
    username: str | None = None,
    password: str | None = None,
    active: bool = True,
) -> dict[str, Any]:
    """Store a relay; AUTH forces required_verify. Returns its public row."""
    name = name.strip()
    if not name or len(name) > 100:
        raise RelayError("a relay needs a name of 1 to 100 characters")
    h, kind = _check_host(host)
    if not 1 <= port <= 65535:
        raise RelayError(f"port {port}: use 1 to 65535 (25, 587, 465 for implicit TLS)")
    if tls_mode not in OUTBOUND_TLS_MODES:
        raise RelayError(f"TLS mode {tls_mode!r}: one of {', '.join(OUTBOUND_TLS_MODES)}")
    mech = auth_mechanism.upper() if auth_mechanism else None
    if mech is not None:
        if mech not in ("PLAIN", "LOGIN"):
            raise RelayError(f"AUTH mechanism {auth_mechanism!r}: PLAIN or LOGIN")
        if not username or password is None:
            raise RelayError("AUTH needs a username and a password")
        tls_mode = "required_verify"  # credentials only over a verified TLS session
    elif username or password:
        raise RelayError("a username or password needs --auth PLAIN or LOGIN")
    try:
        with begin_write(engine) as conn:
            pk = conn.execute(
                insert(relays).values(
                    name=name, host=h, host_kind=kind, port=port, tls_mode=tls_mode,
                    auth_mechanism=mech, username=username if mech else None,
                    password=seal_password(settings, name, password)
                    if mech and password is not None else None,
                    active=active, created_at=utcnow(),
                )
            ).inserted_primary_key
    except IntegrityError:
        raise RelayError(f"a relay named {name!r} exists already") from None
    assert pk is not None
    return get_relay(engine, int(pk[0]))


def seal_password(settings: Settings, name: str, password: str) -> str:
    """The column value for `password`: the prefix and base64 of nonce + ciphertext."""
    from mailcase.secrets import seal

    blob = seal(settings, PASSWORD_INFO, password.encode(), name.encode())
    return SEALED_PREFIX + base64.b64encode(blob).decode("ascii")


def open_password(settings: Settings, name: str, stored: str) -> str:
    """The password `seal_password` sealed; RelayError if this server secret cannot open it."""
    from mailcase.secrets import unseal

    if not stored.startswith(SEALED_PREFIX):
        raise RelayError(f"relay {name!r}: its password is stored unencrypted; run "
                         "`mailcase db upgrade` to encrypt it")
    try:
        blob = base64.b64decode(stored[len(SEALED_PREFIX):], validate=True)
        return unseal(settings, PASSWORD_INFO, blob, name.encode()).decode()
    except (InvalidTag, ValueError):
        raise RelayError(
            f"relay {name!r}: its password cannot be decrypted with this server secret "
            "(server.secret_file changed?); remove the relay and add it again with its password"
        ) from None


def _which(relay: int | str) -> Any:
    if isinstance(relay, int) or (isinstance(relay, str) and relay.isdigit()):
        return relays.c.id == int(relay)
    return relays.c.name == relay


def get_relay(engine: Engine, relay: int | str) -> dict[str, Any]:
    """One relay's public row (no password), by id or name; raises RelayError if unknown."""
    cols = [relays.c[c] for c in _PUBLIC]
    with engine.connect() as conn:
        row = conn.execute(select(*cols).where(_which(relay))).first()
    if row is None:
        raise RelayError(f"no relay {relay!r} (see `mailcase relay list`)")
    return dict(row._mapping)


def list_relays(engine: Engine) -> list[dict[str, Any]]:
    """Every relay's public row (no password), oldest first."""
    cols = [relays.c[c] for c in _PUBLIC]
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(*cols).order_by(relays.c.id))]


def set_relay_active(engine: Engine, relay: int | str, active: bool) -> dict[str, Any]:
    """Turn a relay on or off."""
    with begin_write(engine) as conn:
        n = conn.execute(update(relays).where(_which(relay)).values(active=active)).rowcount
    if not n:
        raise RelayError(f"no relay {relay!r} (see `mailcase relay list`)")
    return get_relay(engine, relay)


def remove_relay(engine: Engine, relay: int | str) -> None:
    """Delete a relay and its filters."""
    with begin_write(engine) as conn:
        target = conn.execute(select(relays.c.id).where(_which(relay))).scalar()
        if target is None:
            raise RelayError(f"no relay {relay!r} (see `mailcase relay list`)")
        conn.execute(delete(relay_filters).where(relay_filters.c.relay_id == target))
        conn.execute(delete(relays).where(relays.c.id == target))


def add_filter(
    engine: Engine,
    *,
    relay: int | str,
    sender: str = "*",
    recipient: str = "*",
    priority: int | None = None,
    active: bool = True,
) -> dict[str, Any]:
    """Send mail matching both patterns through `relay`.

    Priorities are unique (Salesforce's Email Domain Filters): a taken one is refused with the
    filter holding it. Without `priority`, the filter goes after every existing one (the
    highest priority + 10; 100 for the first)."""
    senders = ",".join(parse_patterns(sender))
    recipients = ",".join(parse_patterns(recipient))
    with begin_write(engine) as conn:
        rid = conn.execute(select(relays.c.id).where(_which(relay))).scalar()
        if rid is None:
            raise RelayError(f"no relay {relay!r} (see `mailcase relay list`)")
        f = relay_filters.c
        if priority is None:
            highest = conn.execute(select(func.max(f.priority))).scalar()
            priority = 100 if highest is None else int(highest) + 10
        taken = conn.execute(
            select(f.id, relays.c.name).join(relays, relays.c.id == f.relay_id)
            .where(f.priority == priority)
        ).first()
        if taken is not None:
            raise RelayError(
                f"priority {priority} is taken by filter {taken.id} (relay {taken.name}); "
                "each filter needs its own priority: choose another, or remove that filter "
                "(see `mailcase relay filter list`)"
            )
        pk = conn.execute(
            insert(relay_filters).values(
                relay_id=rid, sender_pattern=senders, recipient_pattern=recipients,
                priority=priority, active=active, created_at=utcnow(),
            )
        ).inserted_primary_key
    assert pk is not None
    return next(f for f in list_filters(engine) if f["id"] == int(pk[0]))


def list_filters(engine: Engine) -> list[dict[str, Any]]:
    """Every filter in match order, with its relay's name."""
    f = relay_filters
    stmt = (
        select(f, relays.c.name.label("relay"))
        .join(relays, relays.c.id == f.c.relay_id)
        .order_by(f.c.priority, f.c.id)
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def remove_filter(engine: Engine, filter_id: int) -> None:
    """Delete one filter."""
    with begin_write(engine) as conn:
        n = conn.execute(delete(relay_filters).where(relay_filters.c.id == filter_id)).rowcount
    if not n:
        raise RelayError(f"no relay filter {filter_id} (see `mailcase relay filter list`)")


def load_table(engine: Engine, settings: Settings) -> RelayTable:
    """The active relays and filters, for routing, with the passwords decrypted; a relay whose
    password cannot be has no password and its `problem` says why."""
    with engine.connect() as conn:
        rs = {
            r.id: _relay_info(settings, r)
            for r in conn.execute(select(relays).where(relays.c.active.is_(True)))
        }
        fs = tuple(
            _Filter(r.relay_id, parse_patterns(r.sender_pattern),
                    parse_patterns(r.recipient_pattern))
            for r in conn.execute(
                select(relay_filters)
                .where(relay_filters.c.active.is_(True))
                .order_by(relay_filters.c.priority, relay_filters.c.id)
            )
            if r.relay_id in rs
        )
    return RelayTable(rs, fs)


def _relay_info(settings: Settings, r: Any) -> RelayInfo:
    password, problem = None, None
    if r.password is not None:
        try:
            password = open_password(settings, r.name, r.password)
        except RelayError as e:
            problem = str(e)
    return RelayInfo(
        id=r.id, name=r.name, host=r.host, host_kind=r.host_kind, port=r.port,
        tls_mode="required_verify" if r.auth_mechanism else r.tls_mode,
        auth_mechanism=r.auth_mechanism, username=r.username, password=password,
        problem=problem,
    )
