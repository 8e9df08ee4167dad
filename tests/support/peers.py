"""Real peers (Postfix, swaks, PostgreSQL ...) are required under ``make test``.

A developer running ``pytest`` by hand on a machine without a peer gets a skip naming what to
install. ``make test`` installs and checks every peer (``scripts/install-test-deps.sh``) and sets
``REQUIRE_TEST_PEERS=1`` (not a ``MAILCASE_`` name: those are config keys). There a missing peer
is a failure, never a skip, so a broken install cannot turn the tests it exists for into a green
run.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["REQUIRED", "missing", "needs"]

REQUIRED = os.environ.get("REQUIRE_TEST_PEERS") == "1"


def missing(reason: str) -> NoReturn:
    """Inside a test or fixture: the peer is not there."""
    if REQUIRED:
        pytest.fail(f"{reason} (required under make test: run scripts/install-test-deps.sh)",
                    pytrace=False)
    pytest.skip(reason)


def needs(unavailable: str | None) -> pytest.MarkDecorator:
    """A module's ``pytestmark`` for a peer that ``unavailable`` says is missing (or None)."""
    if unavailable is not None and REQUIRED:
        # At collection: the module errors, naming the peer, instead of skipping.
        missing(unavailable)
    return pytest.mark.skipif(unavailable is not None, reason=str(unavailable))
