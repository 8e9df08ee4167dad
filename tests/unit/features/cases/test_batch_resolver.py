"""The per-batch DNS memo of the case destination: repeats answered once, temporary failures
never remembered."""

from __future__ import annotations

import pytest

from mailcase.dns import NXDomain, ServerFailure
from mailcase.features.cases.destination import _BatchResolver
from tests.support.dnsserver import DNSServer


def _count(server: DNSServer, name: str) -> int:
    return sum(1 for q in server.queries if q.name.rstrip(".") == name)


def test_answers_and_denials_remembered_temporary_failures_not() -> None:
    zone = {"ok.example": {"TXT": ["v=spf1 -all"]}}
    with DNSServer(zone) as server:
        r = _BatchResolver([server.address], timeout=1.0)
        for _ in range(3):
            assert r.txt_sync("ok.example").records[0].text == "v=spf1 -all"
        assert _count(server, "ok.example") == 1
        for _ in range(2):
            with pytest.raises(NXDomain):
                r.txt_sync("missing.example")
        assert _count(server, "missing.example") == 1
        server.servfail("flaky.example")
        for _ in range(2):
            with pytest.raises(ServerFailure):
                r.txt_sync("flaky.example")
        assert _count(server, "flaky.example") == 2
        # A new resolver (the next batch) asks again.
        _BatchResolver([server.address], timeout=1.0).txt_sync("ok.example")
        assert _count(server, "ok.example") == 2
