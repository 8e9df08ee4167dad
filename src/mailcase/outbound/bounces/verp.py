"""VERP return paths: the key that signs them, their domain, the MAIL FROM of an attempt.

Every outbound message leaves with its own return path `bounce+<queue id>.<mac>@<bounce
domain>` (the address itself is made and checked by `mailcase.policy.recipients`, which the
SMTP listener uses at RCPT time). The MAC (HMAC-SHA256 with the key in `verp_keys`) makes the
address unforgeable, so the listener accepts exactly the bounce addresses we made.
"""

from __future__ import annotations

import logging
import secrets
import threading

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from mailcase.config import Settings
from mailcase.outbound.bounces.models import verp_keys
from mailcase.policy.recipients import verp_address
from mailcase.storage.db import begin_write, make_engine
from mailcase.storage.models import utcnow
from mailcase.storage.sql import insert_ignore

__all__ = [
    "bounce_domain",
    "ensure_verp_key",
    "load_verp_key",
    "return_path_for",
]

log = logging.getLogger(__name__)

_VERP_KEY_ID = 1


def load_verp_key(target: Engine | Connection) -> bytes | None:
    """The key signing bounce addresses; None until one was made."""
    stmt = select(verp_keys.c.key).where(verp_keys.c.id == _VERP_KEY_ID)
    if isinstance(target, Engine):
        with target.connect() as conn:
            value = conn.execute(stmt).scalar()
    else:
        value = target.execute(stmt).scalar()
    return None if value is None else bytes(value)


def ensure_verp_key(conn: Connection) -> bytes:
    """The key, made now (in `conn`'s write transaction) if there is none yet."""
    key = load_verp_key(conn)
    if key is not None:
        return key
    values = {"id": _VERP_KEY_ID, "key": secrets.token_bytes(32), "created_at": utcnow()}
    conn.execute(insert_ignore(conn, verp_keys).values(**values))
    key = load_verp_key(conn)
    assert key is not None
    return key


_key_lock = threading.Lock()

_key_cache: dict[str, bytes] = {}


def _key_for(settings: Settings) -> bytes:
    """The VERP key of the settings' database (read once per process)."""
    url = settings.database_url
    with _key_lock:
        cached = _key_cache.get(url)
    if cached is not None:
        return cached
    engine = make_engine(url)
    try:
        key = load_verp_key(engine)
        if key is None:
            with begin_write(engine) as conn:
                key = ensure_verp_key(conn)
    finally:
        engine.dispose()
    with _key_lock:
        _key_cache[url] = key
    return key


def bounce_domain(settings: Settings) -> str:
    """Domain of the VERP return paths."""
    return (settings.dkim.bounce_domain or settings.server.hostname).strip().rstrip(".").lower()


def return_path_for(settings: Settings, queue_id: str, mail_from: str) -> str:
    """MAIL FROM for delivering `queue_id`: its VERP address, or `mail_from` unchanged for
    the null sender, when VERP is off, or if no key can be had (mail still goes out)."""
    if not mail_from or mail_from == "<>" or not settings.dkim.verp:
        return mail_from
    try:
        return verp_address(_key_for(settings), queue_id, bounce_domain(settings))
    except Exception as e:  # noqa: BLE001 - an unVERPed return path beats no delivery
        log.warning("no VERP return path for %s: %s", queue_id, e)
        return mail_from
