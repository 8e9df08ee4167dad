"""Fixtures shared by the unit tests of `dns` and `authcheck`: a local DNS server per test and
mailcase's resolver pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailcase.dns import Resolver
from tests.support.dnsserver import DNSServer


@pytest.fixture
def dns_server() -> Iterator[DNSServer]:
    with DNSServer() as server:
        yield server
    assert not server.errors, server.errors


@pytest.fixture
def resolver(dns_server: DNSServer) -> Resolver:
    return Resolver([dns_server.address], timeout=1.0)
