"""API tokens: shown once, stored as SHA-256 only."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import Engine, select, update

from mailcase.errors import StorageError
from mailcase.storage import tokens
from mailcase.storage.models import api_tokens


def test_create_verify_list_revoke(db_engine: Engine) -> None:
    secret = tokens.create(db_engine, "ci")
    assert secret.startswith("mc_") and len(secret) == 3 + 43
    with db_engine.connect() as conn:
        row = conn.execute(select(api_tokens)).one()
    assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in {str(v) for v in row}  # the secret itself is nowhere
    assert row.last_used_at is None

    assert tokens.verify(db_engine, secret) == "ci"
    (info,) = tokens.list_tokens(db_engine)
    assert info.name == "ci" and info.last_used_at is not None
    assert not hasattr(info, "token_hash")

    assert tokens.verify(db_engine, secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert tokens.verify(db_engine, "") is None
    assert tokens.verify(db_engine, "Bearer " + secret) is None
    assert tokens.verify(db_engine, "mc_\udcff") is None

    assert tokens.revoke(db_engine, "ci") is True
    assert tokens.revoke(db_engine, "ci") is False
    assert tokens.verify(db_engine, secret) is None


def test_last_used_is_written_at_most_once_a_minute(db_engine: Engine) -> None:
    secret = tokens.create(db_engine, "web")
    tokens.verify(db_engine, secret)
    (first,) = tokens.list_tokens(db_engine)
    tokens.verify(db_engine, secret)
    (second,) = tokens.list_tokens(db_engine)
    assert second.last_used_at == first.last_used_at
    assert first.last_used_at is not None
    with db_engine.begin() as conn:  # pretend the last use was long ago
        conn.execute(update(api_tokens).values(last_used_at=first.last_used_at.replace(year=2020)))
    tokens.verify(db_engine, secret)
    (third,) = tokens.list_tokens(db_engine)
    assert third.last_used_at is not None and third.last_used_at.year > 2020


def test_names_are_unique_and_checked(db_engine: Engine) -> None:
    tokens.create(db_engine, "a")
    with pytest.raises(StorageError, match="already exists"):
        tokens.create(db_engine, "a")
    for bad in ("", "   ", "x" * 101, "tab\there"):
        with pytest.raises(ValueError):
            tokens.create(db_engine, bad)
    assert [t.name for t in tokens.list_tokens(db_engine)] == ["a"]
    assert tokens.create(db_engine, "b") != tokens.create(db_engine, "c")
