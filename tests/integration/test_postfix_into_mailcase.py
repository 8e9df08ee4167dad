"""Postfix (Debian's package) relaying into mailcase, as a company's edge MTA would.

Postfix's client is set to `smtp_tls_security_level = encrypt`: it must find STARTTLS on
mailcase and use it. The message must arrive, and mailcase's email log must show TLS 1.2+ and
the cipher, the same facts Postfix logs for its side of the hop.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest

from tests.support.peers import needs
from tests.support.platform import running_platform
from tests.support.postfix import PostfixInstance, postfix_available

_UNAVAILABLE = postfix_available()
pytestmark = [
    pytest.mark.postfix,
    needs(_UNAVAILABLE),
]


@pytest.mark.parametrize("require_tls", [False, True], ids=["optional", "address-requires-tls"])
def test_postfix_relays_into_mailcase_over_starttls(tmp_path: Path, require_tls: bool) -> None:
    with running_platform(tmp_path / "mc") as mc:
        args = ["address", "add", "support@example.test"] + (["--require-tls"] if require_tls else [])
        mc.cli(*args)
        with PostfixInstance(tmp_path, relay_port=mc.smtp_port, smtp_tls_security_level="encrypt") as pf:
            mid = f"<{uuid.uuid4()}@edge.test>"
            msg = (f"From: customer@edge.test\r\nTo: support@example.test\r\nSubject: via postfix\r\n"
                   f"Message-ID: {mid}\r\n\r\nPlease help.\r\n").encode()
            res = pf.send("customer@edge.test", ["support@example.test"], msg)
            d = pf.wait_delivery(res.queue_id or "", timeout=60)
            assert d.status == "sent", d.line
            tls_line = pf.tls_line_for(d)
            assert tls_line is not None, pf.maillog()
            pf_tls = re.search(r"(TLSv1\.[23]) with cipher (\S+)", tls_line)
            assert pf_tls is not None, tls_line
            queued = re.search(r"queued as ([0-9A-F]+)", d.detail)
            assert queued is not None, d.detail
        qid = queued.group(1)
        entry = json.loads(mc.cli("log", "--json", "--queue-id", qid, "--outcome", "accepted").stdout)[0]
        assert entry["message_id"] == mid
        assert entry["tls_version"] == pf_tls.group(1)
        assert entry["tls_cipher"] == pf_tls.group(2)
        assert entry["helo"] == "postfix.test"
        deadline = time.monotonic() + 10
        while True:
            rows = json.loads(mc.cli("messages", "list", "--json").stdout)
            row = next(r for r in rows if r["queue_id"] == qid)
            if row["state"] == "processed":
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        raw = mc.cli("messages", "show", qid, "--raw").stdout
        assert f"(using {pf_tls.group(1)} with cipher {pf_tls.group(2)}" in raw
        # Postfix's own Received header follows ours: the hop before is kept intact.
        assert raw.index("by mailcase.localhost") < raw.index("by postfix.test")
