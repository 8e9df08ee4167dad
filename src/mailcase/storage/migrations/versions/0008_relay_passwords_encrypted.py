"""Relay passwords encrypted at rest: plaintext `relays.password` values become ciphertext.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

A database dump or a PostgreSQL replica alone must not give away the relays' SMTP AUTH
credentials (issue 11 item 4), as it already does not give away DKIM keys. The column keeps
its name and type; its value becomes ``aesgcm1:`` + base64(nonce + AES-GCM ciphertext), the key
derived with HKDF-SHA256 from the server secret (info ``mailcase relay password v1``), the
relay's name as associated data. Spelled out here rather than imported: a migration must keep
writing the format of its day (`mailcase.delivery.relays` reads it).

The server secret comes from `mailcase.storage.db.upgrade(..., server_secret=...)` (serve and
every CLI command pass it); run from the alembic command line without it, the upgrade refuses
when there is a password to encrypt.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import context, op
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mailcase.errors import StorageError

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INFO = b"mailcase relay password v1"
_PREFIX = "aesgcm1:"


def _aead() -> AESGCM:
    get_secret: Callable[[], bytes] | None = context.config.attributes.get("server_secret")
    if get_secret is None:
        raise StorageError(
            "relays hold passwords to encrypt, and this upgrade was not given the server "
            "secret: run `mailcase db upgrade` (with the instance's --config/--data-dir)"
        )
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(get_secret())
    return AESGCM(key)


def _rows() -> list[tuple[int, str, str]]:
    q = sa.text("SELECT id, name, password FROM relays WHERE password IS NOT NULL ORDER BY id")
    return [(int(r[0]), str(r[1]), str(r[2])) for r in op.get_bind().execute(q)]


def _set(pk: int, value: str) -> None:
    op.get_bind().execute(
        sa.text("UPDATE relays SET password = :p WHERE id = :id"), {"p": value, "id": pk}
    )


def upgrade() -> None:
    plain = [r for r in _rows() if not r[2].startswith(_PREFIX)]
    if not plain:
        return
    aead = _aead()
    for pk, name, password in plain:
        nonce = os.urandom(12)
        blob = nonce + aead.encrypt(nonce, password.encode(), name.encode())
        _set(pk, _PREFIX + base64.b64encode(blob).decode("ascii"))


def downgrade() -> None:
    sealed = [r for r in _rows() if r[2].startswith(_PREFIX)]
    if not sealed:
        return
    aead = _aead()
    for pk, name, value in sealed:
        blob = base64.b64decode(value[len(_PREFIX):])
        _set(pk, aead.decrypt(blob[:12], blob[12:], name.encode()).decode())
