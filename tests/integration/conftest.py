"""Fixtures for tests against a real running mailcase (subprocess) and real peers."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.peers import missing
from tests.support.platform import Platform, running_platform


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One mailcase for the module, with support@example.test and secure@example.test (TLS required)."""
    tmp = tmp_path_factory.mktemp("platform")
    with running_platform(tmp, config='[inbound]\nmax_message_size = 1048576\n') as p:
        p.cli("address", "add", "support@example.test")
        p.cli("address", "add", "secure@example.test", "--require-tls")
        yield p


@pytest.fixture
def client_tls() -> ssl.SSLContext:
    """Clients in tests trust the generated self-signed certificate only by not verifying it."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def require_tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if path is None:
        missing(f"{name} is not installed (make test installs it)")
    return path
