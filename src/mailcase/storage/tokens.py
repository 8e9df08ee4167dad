"""API tokens: the secret is shown once, only its SHA-256 is stored.

A token is ``mc_`` + 32 random bytes (URL-safe base64). Looking a token up by its hash leaks
nothing useful through timing (an attacker would need a preimage); the final comparison is
constant-time anyway. `last_used_at` is written at most once a minute per token, so that API
traffic does not turn every request into a write transaction (and, on SQLite, a wait for the
lock the spool needs).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from mailcase.errors import StorageError
from mailcase.storage.db import begin_write
from mailcase.storage.models import api_tokens, utcnow

__all__ = ["TOKEN_PREFIX", "TokenInfo", "create", "hash_token", "list_tokens", "revoke", "verify"]

TOKEN_PREFIX = "mc_"  # noqa: S105 - a prefix, not a secret
_t = api_tokens
_TOUCH_INTERVAL = timedelta(seconds=60)
_NAME_MAX = 100


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What may be shown about a token: never the secret, never the hash."""

    name: str
    created_at: datetime
    last_used_at: datetime | None


def hash_token(token: str) -> str:
    """SHA-256 hex of the token text."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create(engine: Engine, name: str) -> str:
    """Create a token called `name`; returns the secret (it is not stored, show it once)."""
    name = name.strip()
    if not name or len(name) > _NAME_MAX or not name.isprintable():
        raise ValueError(f"token name must be 1–{_NAME_MAX} printable characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with begin_write(engine) as conn:
            conn.execute(
                insert(_t).values(name=name, token_hash=hash_token(token), created_at=utcnow())
            )
    except IntegrityError:
        raise StorageError(f"token name already exists: {name}") from None
    return token


def verify(engine: Engine, token: str) -> str | None:
    """The name of the token, or None if it is unknown or revoked."""
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
        return None
    digest = hash_token(token)
    with engine.connect() as conn:
        row = conn.execute(
            select(_t.c.id, _t.c.name, _t.c.token_hash, _t.c.last_used_at).where(
                _t.c.token_hash == digest
            )
        ).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= _TOUCH_INTERVAL:
        cutoff = now - _TOUCH_INTERVAL
        with begin_write(engine) as conn:
            conn.execute(
                update(_t)
                .where(_t.c.id == row.id)
                .where(or_(_t.c.last_used_at.is_(None), _t.c.last_used_at < cutoff))
                .values(last_used_at=now)
            )
    return str(row.name)


def list_tokens(engine: Engine) -> list[TokenInfo]:
    """All tokens by name."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(_t.c.name, _t.c.created_at, _t.c.last_used_at).order_by(_t.c.name)
        ).all()
    return [TokenInfo(*r) for r in rows]


def revoke(engine: Engine, name: str) -> bool:
    """Delete the token called `name`; False if there is none."""
    with begin_write(engine) as conn:
        return bool(conn.execute(delete(_t).where(_t.c.name == name.strip())).rowcount)
