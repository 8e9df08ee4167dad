"""The gateway against swaks (Debian package), the tool admins use to test an SMTP server."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.integration.conftest import require_tool
from tests.support.platform import Platform

pytestmark = pytest.mark.swaks


def swaks(p: Platform, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    exe = require_tool("swaks")
    return subprocess.run(
        [exe, "--server", f"127.0.0.1:{p.smtp_port}", "--helo", "swaks.sender.test",
         "--from", "sender@sender.test", "--timeout", "20", *args],
        capture_output=True, text=True, timeout=timeout,
    )


def stored_ids(p: Platform) -> set[str]:
    rows = json.loads(p.cli("messages", "list", "--json", "--limit", "100000").stdout)
    return {r["message_id"] for r in rows}


def header_id() -> tuple[str, list[str]]:
    mid = f"<{uuid.uuid4()}@swaks.test>"
    return mid, ["--header", f"Message-Id: {mid}"]


def test_plain_delivery(platform: Platform) -> None:
    mid, hdr = header_id()
    r = swaks(platform, "--to", "support@example.test", *hdr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "queued as" in r.stdout
    assert mid in stored_ids(platform)


def test_starttls_delivery(platform: Platform) -> None:
    mid, hdr = header_id()
    r = swaks(platform, "--to", "support@example.test", "--tls", *hdr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TLS started" in r.stdout
    rows = json.loads(platform.cli("messages", "list", "--json", "--limit", "100000").stdout)
    row = next(x for x in rows if x["message_id"] == mid)
    assert row["tls_version"] in ("TLSv1.2", "TLSv1.3")


def test_tls_required_address_refused_plain_accepted_over_tls(platform: Platform) -> None:
    mid, hdr = header_id()
    r = swaks(platform, "--to", "secure@example.test", *hdr)
    assert r.returncode != 0
    assert "530 5.7.0 Must issue a STARTTLS command first" in r.stdout
    assert mid not in stored_ids(platform)
    r = swaks(platform, "--to", "secure@example.test", "--tls", *hdr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert mid in stored_ids(platform)


def test_oversized_message(platform: Platform) -> None:
    mid, hdr = header_id()
    # Build a body bigger than the 1 MiB limit of the module's platform.
    body = ("b" * 76 + "\n") * 16000
    r = subprocess.run(
        [require_tool("swaks"), "--server", f"127.0.0.1:{platform.smtp_port}", "--from", "s@sender.test",
         "--to", "support@example.test", "--body", "-", *hdr],
        input=body, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode != 0
    assert "552 5.3.4" in r.stdout
    assert mid not in stored_ids(platform)


def test_unknown_recipient(platform: Platform) -> None:
    r = swaks(platform, "--to", "nobody@example.test")
    assert r.returncode != 0
    assert "550 5.1.1" in r.stdout


def test_relay_attempt_to_foreign_domain(platform: Platform) -> None:
    r = swaks(platform, "--to", "victim@foreign.test")
    assert r.returncode != 0
    assert "550 5.7.1" in r.stdout
    log = json.loads(platform.cli("log", "--json", "--address", "victim@foreign.test").stdout)
    assert log and log[0]["outcome"] == "rejected" and "relay" in log[0]["reason"]


def test_postmaster_reachable_without_configuration(platform: Platform) -> None:
    """RFC 5321 §4.5.1: postmaster@ a served domain is accepted and stored like any message."""
    mid, hdr = header_id()
    r = swaks(platform, "--to", "postmaster@example.test", *hdr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert mid in stored_ids(platform)
    r = swaks(platform, "--to", "postmaster@foreign.test")
    assert r.returncode != 0 and "550 5.7.1" in r.stdout
