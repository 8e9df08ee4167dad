"""Issue 12.5: `dkim check` saying "active" means a running process signs with the key now.

The delivery engine's process caches each domain's keys. A key created and activated by the
CLI (another process) must be used by the next message it signs, not up to 30 s later: every
key change bumps the settings generation, which the cache checks.
"""

from __future__ import annotations

from pathlib import Path

from mailcase.config import load_settings
from mailcase.outbound import dkim
from mailcase.storage.db import make_engine
from tests.support.dnsserver import DNSServer
from tests.support.platform import running_platform

MESSAGE = (b"From: Agent <agent@example.test>\r\nTo: k@customer.test\r\nSubject: s\r\n"
           b"Message-ID: <c1@example.test>\r\n\r\nbody\r\n")


def test_a_key_activated_by_the_cli_signs_the_next_message_here(tmp_path: Path) -> None:
    with DNSServer({}) as dns, running_platform(tmp_path, config="", start=False) as p:
        assert p.config_path is not None
        p.config_path.write_text(f'[dns]\nnameservers = ["{dns.address}"]\ntimeout = 2.0\n')
        p.cli("init")
        settings = load_settings(p.config_path, overrides={"data_dir": str(p.data_dir)})
        engine = make_engine(settings.database_url)
        try:
            # This process signs first with no key at all: the (empty) key list is cached.
            assert dkim.sign_for_delivery(engine, settings, "agent@example.test",
                                          MESSAGE) == MESSAGE
            out = p.cli("dkim", "create", "example.test", "--algorithm", "ed25519").stdout
            line = next(x for x in out.splitlines() if "IN TXT" in x)
            name, _, value = line.partition(". IN TXT ")
            dns.set(name, "TXT", value.strip('"'))
            assert "active" in p.cli("dkim", "check", "example.test").stdout
            signed = dkim.sign_for_delivery(engine, settings, "agent@example.test", MESSAGE)
        finally:
            engine.dispose()
    assert signed.startswith(b"DKIM-Signature:") and b"d=example.test" in signed
