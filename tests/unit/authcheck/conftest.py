"""Fixtures: DKIM keys, made once per session (the DNS server and resolver are in
tests/unit/conftest.py, shared with the resolver's own tests)."""

from __future__ import annotations

import pytest

from tests.unit.authcheck.helpers import DKIMKey, rsa_key


@pytest.fixture(scope="session")
def rsa() -> DKIMKey:
    """One RSA-2048 key for the session (generating one takes a while)."""
    return rsa_key()


@pytest.fixture(scope="session")
def other_rsa() -> DKIMKey:
    return rsa_key()
