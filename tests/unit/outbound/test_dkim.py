"""DKIM keys and signing against real DNS (tests/support/dnsserver.py) and real databases.

Signatures are verified with dkimpy, fetching the key record from the same DNS server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dkim as dkimpy
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from mailcase.config import Settings
from mailcase.dns import Resolver
from mailcase.outbound import dkim
from mailcase.outbound.dkim_models import dkim_keys
from tests.support.dnsserver import DNSServer

MESSAGE = (
    b"From: Support <support@example.test>\r\n"
    b"To: kunde@elsewhere.test\r\n"
    b"Subject: [Case 00001027] Ihre Anfrage\r\n"
    b"Date: Thu, 26 Nov 2026 18:00:00 +0000\r\n"
    b"Message-ID: <abc@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Vielen Dank.\r\n"
)


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    with DNSServer({"example.test": {"A": "192.0.2.10"}}) as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, dns: DNSServer, db_url: str) -> Settings:
    return Settings.model_validate({
        "data_dir": str(tmp_path / "data"),
        "database": {"url": db_url},
        "dns": {"nameservers": [dns.address], "timeout": 3.0},
    })


def _publish(dns: DNSServer, info: dkim.DKIMKeyInfo) -> None:
    dns.set(info.dns_name, "TXT", info.dns_record)


def _verify(dns: DNSServer, signed: bytes) -> bool:
    resolver = Resolver([dns.address], timeout=3.0)

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.txt_sync(name.decode().rstrip("."))
        except Exception:
            return None
        return b"".join(r.value for r in answer.records)

    return bool(dkimpy.verify(signed, dnsfunc=dnsfunc))


def _signature(signed: bytes) -> dict[str, str]:
    head = signed.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("DKIM-Signature:")
    sig = head.split("\r\n", 1)[0] + "".join(
        line for line in head.split("\r\n")[1:] if line[:1] in " \t"
    )
    tags = {}
    for part in sig.partition(":")[2].split(";"):
        k, _, v = part.partition("=")
        tags[k.strip()] = "".join(v.split())
    return tags


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_key_signs_only_after_its_record_is_found_and_verifies(
    db_engine: Engine, settings: Settings, dns: DNSServer, algorithm: str
) -> None:
    info = dkim.create_key(db_engine, settings, "Example.TEST", algorithm=algorithm)
    assert (info.domain, info.selector, info.state) == ("example.test", "mc1", "pending")
    assert info.dns_name == "mc1._domainkey.example.test"
    assert info.dns_record.startswith(f"v=DKIM1; k={algorithm}; p=")

    # Not published yet: the message goes out unchanged.
    assert dkim.sign_for_delivery(db_engine, settings, "support@example.test", MESSAGE) == MESSAGE
    [result] = dkim.check_domain(db_engine, settings, "example.test")
    assert not result.found and "no TXT record" in result.detail
    assert dkim.list_keys(db_engine)[0].state == "pending"

    _publish(dns, info)
    [result] = dkim.check_domain(db_engine, settings, "example.test")
    assert result.found
    assert dkim.list_keys(db_engine)[0].state == "active"

    signed = dkim.sign_for_delivery(db_engine, settings, "bounce+x@mx.example.test", MESSAGE)
    assert signed.endswith(MESSAGE) and signed != MESSAGE
    tags = _signature(signed)
    assert tags["d"] == "example.test" and tags["s"] == "mc1"
    assert tags["a"] == ("ed25519-sha256" if algorithm == "ed25519" else "rsa-sha256")
    assert tags["c"] == "relaxed/relaxed"
    signed_headers = tags["h"].split(":")
    assert signed_headers == [
        "from", "to", "subject", "date", "message-id", "mime-version", "content-type",
    ]
    assert _verify(dns, signed)
    # Tampering breaks it (the verification is real).
    assert not _verify(dns, signed.replace(b"Vielen Dank.", b"Vielen Dank!"))


def test_wrong_or_absent_record_means_no_signature(
    db_engine: Engine, settings: Settings, dns: DNSServer
) -> None:
    info = dkim.create_key(db_engine, settings, "example.test", algorithm="ed25519")
    other = dkim.create_key(db_engine, settings, "other.test", algorithm="ed25519")
    # A record with another key's p= at our name: not ours, never used.
    dns.set(info.dns_name, "TXT", other.dns_record)
    [result] = dkim.check_domain(db_engine, settings, "example.test")
    assert not result.found and "different public key" in result.detail
    assert dkim.sign_for_delivery(db_engine, settings, "a@example.test", MESSAGE) == MESSAGE
    # Right key, wrong algorithm tag.
    dns.set(info.dns_name, "TXT", info.dns_record.replace("k=ed25519", "k=rsa"))
    [result] = dkim.check_domain(db_engine, settings, "example.test")
    assert not result.found and "k=rsa" in result.detail
    # The record found once and withdrawn later: the key falls back to pending.
    _publish(dns, info)
    assert dkim.check_domain(db_engine, settings, "example.test")[0].found
    dns.remove(info.dns_name)
    assert not dkim.check_domain(db_engine, settings, "example.test")[0].found
    assert dkim.list_keys(db_engine, "example.test")[0].state == "pending"
    assert dkim.sign_for_delivery(db_engine, settings, "a@example.test", MESSAGE) == MESSAGE


def test_no_key_for_the_from_domain_means_unchanged(
    db_engine: Engine, settings: Settings, dns: DNSServer
) -> None:
    info = dkim.create_key(db_engine, settings, "example.test")
    _publish(dns, info)
    other_from = MESSAGE.replace(b"support@example.test", b"someone@unsigned.test")
    assert dkim.sign_for_delivery(db_engine, settings, "x@example.test", other_from) == other_from


def test_dns_lookup_result_is_cached_between_messages(
    db_engine: Engine, settings: Settings, dns: DNSServer
) -> None:
    info = dkim.create_key(db_engine, settings, "example.test", algorithm="ed25519")
    _publish(dns, info)  # published but nobody ran `dkim check`: signing finds it itself
    assert dkim.list_keys(db_engine)[0].state == "pending"
    for _ in range(5):
        assert _verify(dns, dkim.sign_for_delivery(db_engine, settings, "a@example.test", MESSAGE))
    # One lookup by signing (the 5 verifications made 5 more), not one per message; the
    # key was marked active on the way.
    assert len(dns.queries_for(info.dns_name, "TXT")) == 1 + 5
    assert dkim.list_keys(db_engine)[0].state == "active"
    # After `dkim check` signing trusts that lookup and asks nothing itself.
    dkim.check_domain(db_engine, settings, "example.test")
    before = len(dns.queries_for(info.dns_name, "TXT"))
    signed = dkim.sign_for_delivery(db_engine, settings, "a@example.test", MESSAGE)
    assert signed != MESSAGE
    assert len(dns.queries_for(info.dns_name, "TXT")) == before


def test_private_key_is_encrypted_at_rest_and_bound_to_the_server_secret(
    db_engine: Engine, settings: Settings, dns: DNSServer, tmp_path: Path
) -> None:
    info = dkim.create_key(db_engine, settings, "example.test")
    _publish(dns, info)
    dkim.check_domain(db_engine, settings, "example.test")
    with db_engine.connect() as c:
        stored = bytes(c.execute(select(dkim_keys.c.private_key)).scalar_one())
    assert b"PRIVATE KEY" not in stored and b"-----BEGIN" not in stored
    # Another instance's secret cannot use it: the message goes out unsigned, no crash.
    stranger = settings.model_copy(update={"data_dir": tmp_path / "elsewhere"})
    dkim._forget("example.test")
    assert dkim.sign_for_delivery(db_engine, stranger, "a@example.test", MESSAGE) == MESSAGE
    assert dkim.sign_for_delivery(db_engine, settings, "a@example.test", MESSAGE) != MESSAGE
    # Neither list nor info carries the private key.
    assert "private" not in repr(dkim.list_keys(db_engine)).lower()


def test_rotation_publishes_first_and_switches_when_the_new_record_is_found(
    db_engine: Engine, settings: Settings, dns: DNSServer
) -> None:
    first = dkim.create_key(db_engine, settings, "example.test", algorithm="ed25519")
    _publish(dns, first)
    dkim.check_domain(db_engine, settings, "example.test")
    new = dkim.rotate(db_engine, settings, "example.test")
    assert (new.selector, new.state, new.algorithm) == ("mc2", "pending", "ed25519")
    with pytest.raises(dkim.DKIMError, match="already waiting"):
        dkim.rotate(db_engine, settings, "example.test")
    # Not published yet: the old key keeps signing.
    dkim.check_domain(db_engine, settings, "example.test")
    signed = dkim.sign_for_delivery(db_engine, settings, "a@example.test", MESSAGE)
    assert _signature(signed)["s"] == "mc1" and _verify(dns, signed)

    _publish(dns, new)
    dkim.check_domain(db_engine, settings, "example.test")
    states = {k.selector: k.state for k in dkim.list_keys(db_engine, "example.test")}
    assert states == {"mc1": "retired", "mc2": "active"}
    signed = dkim.sign_for_delivery(db_engine, settings, "a@example.test", MESSAGE)
    assert _signature(signed)["s"] == "mc2" and _verify(dns, signed)

    # The next rotation goes back to mc1, replacing the retired key.
    again = dkim.rotate(db_engine, settings, "example.test", algorithm="rsa")
    assert (again.selector, again.algorithm) == ("mc1", "rsa")
    assert again.dns_record != first.dns_record


def test_rotation_due_after_rotate_days(db_engine: Engine, settings: Settings, dns: DNSServer) -> None:
    import datetime as dt

    info = dkim.create_key(db_engine, settings, "example.test", algorithm="ed25519")
    _publish(dns, info)
    dkim.check_domain(db_engine, settings, "example.test")
    key = dkim.list_keys(db_engine)[0]
    assert not dkim.rotation_due(key, settings)  # rotate_days = 0: never
    settings.dkim.rotate_days = 30
    assert not dkim.rotation_due(key, settings)
    later = key.activated_at + dt.timedelta(days=31)  # type: ignore[operator]
    assert dkim.rotation_due(key, settings, now=later)

    # A key activated 31 days ago: the next signing's maintenance starts the rotation by
    # itself (new pending key to publish) and keeps signing with the old key meanwhile.
    with db_engine.begin() as conn:
        conn.execute(dkim_keys.update().values(activated_at=later - dt.timedelta(days=62)))
    dkim._forget("example.test")
    signed = dkim.sign_for_delivery(db_engine, settings, "a@example.test", MESSAGE)
    assert _signature(signed)["s"] == "mc1"
    states = {k.selector: k.state for k in dkim.list_keys(db_engine)}
    assert states == {"mc1": "active", "mc2": "pending"}


def test_bad_input_is_refused_with_a_reason(db_engine: Engine, settings: Settings) -> None:
    with pytest.raises(dkim.DKIMError, match="valid domain"):
        dkim.create_key(db_engine, settings, "not a domain")
    with pytest.raises(dkim.DKIMError, match="selector"):
        dkim.create_key(db_engine, settings, "example.test", selector="bad_selector!")
    dkim.create_key(db_engine, settings, "example.test")
    with pytest.raises(dkim.DKIMError, match="already has a key"):
        dkim.create_key(db_engine, settings, "example.test")
    with pytest.raises(dkim.DKIMError, match="no DKIM key"):
        dkim.check_domain(db_engine, settings, "nokey.test")


def test_signing_domain_prefers_the_from_header() -> None:
    assert dkim.signing_domain("bounce+1.x@mx.test", MESSAGE) == "example.test"
    folded = b"From: \"Support, Team\" (desk)\r\n <Support@Example.TEST>\r\n\r\nx\r\n"
    assert dkim.signing_domain("", folded) == "example.test"
    assert dkim.signing_domain("a@Env.test", b"Subject: x\r\n\r\nbody\r\n") == "env.test"
    assert dkim.signing_domain("", b"Subject: x\r\n\r\nbody\r\n") is None


def test_zone_line_splits_long_records_into_255_octet_strings() -> None:
    import datetime as dt
    import re

    record = dkim.dns_record("rsa", "A" * 392)  # the length of an RSA-2048 p=
    info = dkim.DKIMKeyInfo(
        domain="example.test", selector="mc1", algorithm="rsa", state="pending",
        dns_name="mc1._domainkey.example.test", dns_record=record,
        created_at=dt.datetime.now(dt.UTC), checked_at=None, check_result=None,
        activated_at=None,
    )
    line = dkim.zone_line(info)
    assert line.startswith("mc1._domainkey.example.test. IN TXT \"v=DKIM1; k=rsa; p=")
    chunks = re.findall(r'"([^"]*)"', line)
    assert len(chunks) == 2 and all(len(c) <= 255 for c in chunks)
    assert "".join(chunks) == record


def test_a_check_recorded_by_another_process_takes_effect_without_waiting(
    db_engine: Engine, settings: Settings, dns: DNSServer
) -> None:
    import datetime as dt

    info = dkim.create_key(db_engine, settings, "example.test", algorithm="ed25519")
    # This process looks first: nothing published, remembered for check_interval seconds.
    assert dkim.sign_for_delivery(db_engine, settings, "a@example.test", MESSAGE) == MESSAGE
    _publish(dns, info)
    assert dkim.sign_for_delivery(db_engine, settings, "a@example.test", MESSAGE) == MESSAGE
    # `mailcase dkim check` in another process records the match in the database ...
    with db_engine.begin() as conn:
        conn.execute(dkim_keys.update().values(
            state="active", checked_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)))
    dkim._keys_cache.clear()  # ... and our 30-second copy of the key list runs out
    signed = dkim.sign_for_delivery(db_engine, settings, "a@example.test", MESSAGE)
    assert signed != MESSAGE and _verify(dns, signed)


def test_check_interval_is_in_seconds(
    db_engine: Engine, settings: Settings, dns: DNSServer
) -> None:
    """Every other interval in the config is in seconds; `dkim.check_interval` was in minutes.
    A lookup trusted for 0.05 s is looked at again after 0.3 s (3 s if read as minutes)."""
    import time

    quick = settings.model_copy(
        update={"dkim": settings.dkim.model_copy(update={"check_interval": 0.05})}
    )
    info = dkim.create_key(db_engine, quick, "example.test", algorithm="ed25519")
    assert dkim.sign_for_delivery(db_engine, quick, "a@example.test", MESSAGE) == MESSAGE
    _publish(dns, info)
    time.sleep(0.3)
    signed = dkim.sign_for_delivery(db_engine, quick, "a@example.test", MESSAGE)
    assert signed != MESSAGE and _verify(dns, signed)
