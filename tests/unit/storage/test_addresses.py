"""Receiving addresses and the settings generation counter."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from mailcase.errors import StorageError
from mailcase.storage import addresses


def test_add_list_get_change_remove(db_engine: Engine) -> None:
    g0 = addresses.generation(db_engine)
    rec = addresses.add(db_engine, "  Support@Example.TEST ", require_tls=True)
    assert (rec.address, rec.require_tls, rec.enabled) == ("support@example.test", True, True)
    assert rec.created_at.tzinfo is not None
    assert addresses.generation(db_engine) == g0 + 1
    addresses.add(db_engine, "sales@example.test")
    assert [a.address for a in addresses.list_addresses(db_engine)] == [
        "sales@example.test", "support@example.test"]
    assert addresses.get(db_engine, "SUPPORT@example.test") == rec
    assert addresses.get(db_engine, "other@example.test") is None

    assert addresses.set_require_tls(db_engine, "support@example.test", False) is True
    assert addresses.set_enabled(db_engine, "sales@example.test", False) is True
    assert addresses.set_require_tls(db_engine, "missing@example.test", True) is False
    got = addresses.get(db_engine, "support@example.test")
    assert got is not None and got.require_tls is False
    assert addresses.generation(db_engine) == g0 + 4

    snap = addresses.snapshot(db_engine)
    assert snap.generation == g0 + 4
    assert snap.addresses["sales@example.test"].enabled is False

    assert addresses.remove(db_engine, "Sales@example.test") is True
    assert addresses.remove(db_engine, "sales@example.test") is False
    assert addresses.generation(db_engine) == g0 + 5


def test_duplicate_is_a_clear_error_and_changes_nothing(db_engine: Engine) -> None:
    addresses.add(db_engine, "support@example.test")
    g = addresses.generation(db_engine)
    with pytest.raises(StorageError, match="address already exists"):
        addresses.add(db_engine, "SUPPORT@example.test")
    assert addresses.generation(db_engine) == g
    assert len(addresses.list_addresses(db_engine)) == 1


@pytest.mark.parametrize("bad", ["", "no-at-sign", "@example.test", "a@", "a b@example.test",
                                 "a@example.test\n", "x" * 320 + "@example.test"])
def test_malformed_addresses_are_refused(bad: str) -> None:
    if bad.endswith("\n"):
        bad = "a\x01@example.test"
    with pytest.raises(ValueError):
        addresses.normalize(bad)
