"""Outbound TLS modes against real Postfix servers, with certificates from a test CA.

Five receiving Postfix instances (discard mode): a good certificate for its MX name, a
certificate for another name, an expired certificate, no STARTTLS at all, and a good
certificate offered only over TLS 1.1 and older (our client requires 1.2: the handshake
fails); and a STRIPTLS proxy in front of the good one. Every mode meets every server; the outcome (delivered or
deferred, at which stage, with which TLS facts) must be exactly the policy's.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from sqlalchemy import Engine

from mailcase.config import OUTBOUND_TLS_MODES
from mailcase.delivery.engine import DeliveryEngine
from mailcase.outbound.queue import enqueue as queue_enqueue
from mailcase.platform import build_outbound
from mailcase.storage import emaillog
from mailcase.storage.db import begin_write, make_engine, upgrade
from tests.support.delivery import delivery_settings, run_until_settled, show
from tests.support.dnsserver import DNSServer
from tests.support.peers import needs
from tests.support.postfix import PostfixInstance, postfix_available
from tests.support.striptls import StripTLSProxy, strip_starttls

pytestmark = needs(postfix_available())

MODES = OUTBOUND_TLS_MODES
ZONE = {
    name: {"MX": [(10, f"mx.{name}")]}
    for name in ("good.test", "wrong.test", "expired.test", "plain.test", "tls11.test")
} | {
    f"mx.{name}": {"A": ["127.0.0.1"]}
    for name in ("good.test", "wrong.test", "expired.test", "plain.test", "tls11.test")
}


@pytest.fixture(scope="module")
def ca_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="mailcase-tls-"))
    d.chmod(0o755)
    yield d


@pytest.fixture(scope="module")
def ca(ca_dir: Path) -> trustme.CA:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(ca_dir / "ca.pem"))
    return ca


def _leaf(ca: trustme.CA, d: Path, name: str, *hosts: str, **kw: datetime) -> tuple[Path, Path]:
    leaf = ca.issue_cert(*hosts, **kw)  # type: ignore[arg-type]
    cert, key = d / f"{name}-cert.pem", d / f"{name}-key.pem"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    return cert, key


_UP_TO_TLS11 = "!SSLv2, !SSLv3, !TLSv1.2, !TLSv1.3"


@pytest.fixture(scope="module")
def servers(
    ca: trustme.CA, ca_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, PostfixInstance]]:
    tmp = tmp_path_factory.mktemp("postfix")
    now = datetime.now(UTC)
    good = _leaf(ca, ca_dir, "good", "mx.good.test")
    tls11 = _leaf(ca, ca_dir, "tls11", "mx.tls11.test")
    wrong = _leaf(ca, ca_dir, "wrong", "somewhere-else.test")
    expired = _leaf(ca, ca_dir, "expired", "mx.expired.test",
                    not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))
    instances = {
        "good": PostfixInstance(tmp, smtpd_tls_cert_file=good[0], smtpd_tls_key_file=good[1],
                                myhostname="mx.good.test"),
        "wrong": PostfixInstance(tmp, smtpd_tls_cert_file=wrong[0],
                                 smtpd_tls_key_file=wrong[1], myhostname="mx.wrong.test"),
        "expired": PostfixInstance(tmp, smtpd_tls_cert_file=expired[0],
                                   smtpd_tls_key_file=expired[1],
                                   myhostname="mx.expired.test"),
        "plain": PostfixInstance(tmp, myhostname="mx.plain.test"),
        # Offers STARTTLS, but speaks no TLS version we accept: every handshake fails.
        "tls11": PostfixInstance(tmp, smtpd_tls_cert_file=tls11[0],
                                 smtpd_tls_key_file=tls11[1], myhostname="mx.tls11.test",
                                 settings={"smtpd_tls_protocols": _UP_TO_TLS11,
                                           "smtpd_tls_mandatory_protocols": _UP_TO_TLS11}),
    }
    started: list[PostfixInstance] = []
    try:
        for pf in instances.values():
            pf.start()
            started.append(pf)
        yield instances
    finally:
        for pf in started:
            pf.close()


@pytest.fixture(scope="module")
def dns() -> Iterator[DNSServer]:
    with DNSServer(ZONE) as server:
        yield server


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'mailcase.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def _enqueue(db: Engine, rcpt: str) -> tuple[str, str]:
    mid = f"<{uuid.uuid4().hex}@sender.test>"
    content = f"From: a@sender.test\r\nTo: {rcpt}\r\nSubject: tls\r\nMessage-ID: {mid}\r\n\r\nx\r\n"
    with begin_write(db) as conn:
        qid = queue_enqueue.enqueue(conn, mail_from="a@sender.test", rcpt_to=[rcpt],
                                    content=content.encode())
    return qid, mid


def _received(pf: PostfixInstance, mid: str) -> bool:
    return re.search(re.escape(f"message-id={mid}"), pf.maillog()) is not None


# server -> mode -> expected: ("delivered", verified) or ("deferred", reason fragment)
EXPECTED: dict[str, dict[str, tuple[str, object]]] = {
    "good": {"off": ("plaintext", False), "preferred": ("tls", False),
             "required": ("tls", False), "preferred_verify": ("tls", True),
             "required_verify": ("tls", True)},
    "wrong": {"off": ("plaintext", False), "preferred": ("tls", False),
              "required": ("tls", False),
              "preferred_verify": ("deferred", "certificate verification failed"),
              "required_verify": ("deferred", "certificate verification failed")},
    "expired": {"off": ("plaintext", False), "preferred": ("tls", False),
                "required": ("tls", False),
                "preferred_verify": ("deferred", "certificate verification failed"),
                "required_verify": ("deferred", "certificate verification failed")},
    "plain": {"off": ("plaintext", False), "preferred": ("plaintext", False),
              "required": ("deferred", "does not offer STARTTLS"),
              "preferred_verify": ("plaintext", False),
              "required_verify": ("deferred", "does not offer STARTTLS")},
    # Issue 12.4: opportunistic TLS (Postfix `may`) retries the same MX in plaintext; the
    # modes that require TLS or a verified certificate never do.
    "tls11": {"off": ("plaintext", False),
              "preferred": ("fallback", "TLS handshake failed (preferred)"),
              "required": ("deferred", "TLS handshake failed (required)"),
              "preferred_verify": ("deferred", "certificate verification failed"),
              "required_verify": ("deferred", "certificate verification failed")},
}


@pytest.mark.parametrize("server", list(EXPECTED))
@pytest.mark.parametrize("mode", MODES)
async def test_tls_mode_against_server(
    server: str, mode: str, servers: dict[str, PostfixInstance], dns: DNSServer, db: Engine,
    ca_dir: Path, tmp_path: Path,
) -> None:
    pf = servers[server]
    settings = delivery_settings(tmp_path, dns.address, mx_port=pf.smtpd_port, tls_mode=mode,
                                 ca_file=ca_dir / "ca.pem")
    qid, mid = _enqueue(db, f"user@{server}.test")
    await run_until_settled(DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery))
    m = show(db, qid)
    (att,) = m["attempts"]
    kind, detail = EXPECTED[server][mode]
    assert att["tls_mode"] == mode, att
    if kind == "deferred":
        assert m["recipients"][0]["state"] == "deferred"
        assert att["result"] == "transient" and att["stage"] == "starttls"
        assert isinstance(detail, str) and detail in att["reply_text"]
        assert not _received(pf, mid), "no content may be sent when the TLS policy fails"
        log = emaillog.query(db, queue_id=qid)[0]
        assert log["outcome"] == "deferred" and log["stage"] == "starttls"
        assert att["tls_fallback"] is None and log["tls_fallback"] is None
        return
    assert m["state"] == "delivered", att
    pf.wait_for_log(re.escape(f"message-id={mid}"), timeout=10)
    log = emaillog.query(db, queue_id=qid)[0]
    assert (log["remote_host"], log["tls_mode"], log["attempt"]) == (
        f"mx.{server}.test", mode, 1)
    if kind in ("plaintext", "fallback"):
        assert att["tls_version"] is None and not att["tls_verified"]
        assert log["tls_version"] is None and log["tls_basis"] is None
    if kind == "plaintext":
        assert att["tls_fallback"] is None and log["tls_fallback"] is None
    elif kind == "fallback":
        # The same MX, one attempt, the fallback said on the attempt and in the email log.
        assert isinstance(detail, str) and detail in att["tls_fallback"]
        assert "retried in plaintext" in att["tls_fallback"]
        assert log["tls_fallback"] == att["tls_fallback"] and log["outcome"] == "delivered"
    else:
        assert att["tls_version"] in ("TLSv1.2", "TLSv1.3") and att["tls_cipher"]
        assert att["tls_verified"] is detail
        assert att["verified_by"] == ("CA" if detail else None)
        assert log["tls_version"] == att["tls_version"]
        assert (log["tls_verified"], log["tls_basis"]) == (detail, "ca" if detail else "none")


def test_a_per_domain_mode_beats_the_global_one(
    servers: dict[str, PostfixInstance],
) -> None:
    from mailcase.tls.outbound import mode_for_domain

    per = {"wrong.test": "off", "*.good.test": "required_verify"}
    assert mode_for_domain("required_verify", per, "wrong.test") == "off"
    assert mode_for_domain("off", per, "good.test") == "off"  # *.x is subdomains only
    assert mode_for_domain("off", per, "a.good.test") == "required_verify"


async def test_per_domain_setting_applies_to_delivery(
    servers: dict[str, PostfixInstance], dns: DNSServer, db: Engine, ca_dir: Path,
    tmp_path: Path,
) -> None:
    pf = servers["wrong"]
    settings = delivery_settings(
        tmp_path, dns.address, mx_port=pf.smtpd_port, tls_mode="preferred",
        ca_file=ca_dir / "ca.pem", tls_domains={"wrong.test": "required_verify"},
    )
    qid, mid = _enqueue(db, "user@wrong.test")
    await run_until_settled(DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery))
    (att,) = show(db, qid)["attempts"]
    assert att["tls_mode"] == "required_verify" and att["result"] == "transient"
    assert not _received(pf, mid)


def test_strip_starttls_keeps_the_reply_well_formed() -> None:
    reply = [b"250-mx.test\r\n", b"250-PIPELINING\r\n", b"250-STARTTLS\r\n", b"250 8BITMIME\r\n"]
    assert strip_starttls(reply) == [b"250-mx.test\r\n", b"250-PIPELINING\r\n",
                                     b"250 8BITMIME\r\n"]
    last = [b"250-mx.test\r\n", b"250 STARTTLS\r\n"]
    assert strip_starttls(last) == [b"250 mx.test\r\n"]


@pytest.mark.parametrize(
    ("mode", "delivered"),
    [("required", False), ("required_verify", False), ("preferred", True),
     ("preferred_verify", True)],
)
async def test_striptls_proxy(
    mode: str, delivered: bool, servers: dict[str, PostfixInstance], dns: DNSServer,
    db: Engine, ca_dir: Path, tmp_path: Path,
) -> None:
    pf = servers["good"]
    async with StripTLSProxy("127.0.0.1", pf.smtpd_port) as proxy:
        settings = delivery_settings(tmp_path, dns.address, mx_port=proxy.port, tls_mode=mode,
                                     ca_file=ca_dir / "ca.pem")
        qid, mid = _enqueue(db, "user@good.test")
        await run_until_settled(DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery))
        assert proxy.stripped >= 1
    m = show(db, qid)
    (att,) = m["attempts"]
    log = emaillog.query(db, queue_id=qid)[0]
    if delivered:
        # Without MTA-STS or DANE the downgrade cannot be detected: it is sent, and logged
        # as plaintext so that it can be seen.
        assert m["state"] == "delivered" and att["tls_version"] is None
        assert log["tls_version"] is None and log["tls_fallback"] is None
        pf.wait_for_log(re.escape(f"message-id={mid}"), timeout=10)
    else:
        assert att["result"] == "transient" and att["stage"] == "starttls"
        assert "does not offer STARTTLS" in att["reply_text"]
        assert log["outcome"] == "deferred"
        assert not _received(pf, mid)
