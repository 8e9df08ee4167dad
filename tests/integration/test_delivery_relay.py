"""Email Relay against a real Postfix smarthost that requires AUTH over TLS.

The smarthost is Postfix with ``smtpd_tls_auth_only`` and ``permit_sasl_authenticated,
reject``: mail gets through only after AUTH PLAIN or LOGIN over TLS with the right password.
Postfix checks the password through its Dovecot SASL protocol against a small auth server in
tests/support/dovecot_auth.py (Debian's Postfix reads Cyrus SASL configuration only from
/etc/postfix/sasl, which tests must not touch, and Dovecot is not installed). Mail not matched
by a filter goes by MX to smtp-sink.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from sqlalchemy import Engine

from mailcase.config import Settings
from mailcase.delivery import relays
from mailcase.delivery.engine import DeliveryEngine
from mailcase.outbound.queue import enqueue as queue_enqueue
from mailcase.platform import build_outbound
from mailcase.storage.db import begin_write, make_engine, upgrade
from tests.support.delivery import delivery_settings, run_until_settled, show
from tests.support.dnsserver import DNSServer
from tests.support.dovecot_auth import DovecotAuth
from tests.support.implicit_tls import ImplicitTLSFrontend
from tests.support.peers import needs
from tests.support.postfix import PostfixInstance, postfix_available
from tests.support.smtpsink import SmtpSink

PASSWORD = "s3cret-Relay-pw"  # a test account of a throw-away server


pytestmark = needs(postfix_available())

ZONE = {
    "relay.test": {"A": ["127.0.0.1"]},
    "implicit.relay.test": {"A": ["127.0.0.2"]},
    "relays.test": {"MX": [(10, "relay.test")]},
    "other.test": {"MX": [(10, "mx.other.test")]},
    "mx.other.test": {"A": ["127.0.0.1"]},
}


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="mailcase-relay-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def ca(workdir: Path) -> trustme.CA:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    return ca


@pytest.fixture(scope="module")
def sasl() -> Iterator[DovecotAuth]:
    with DovecotAuth({"relayuser": PASSWORD}) as auth:
        yield auth


@pytest.fixture(scope="module")
def smarthost(ca: trustme.CA, workdir: Path, sasl: DovecotAuth,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostfixInstance]:
    leaf = ca.issue_cert("relay.test")
    cert, key = workdir / "relay-cert.pem", workdir / "relay-key.pem"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    settings = sasl.postfix_settings()
    with PostfixInstance(tmp_path_factory.mktemp("smarthost"), smtpd_tls_cert_file=cert,
                         smtpd_tls_key_file=key, myhostname="relay.test",
                         settings=settings) as pf:
        yield pf


@pytest.fixture(scope="module")
def plain_smarthost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostfixInstance]:
    """A relay that offers no STARTTLS (and would relay for loopback without AUTH)."""
    with PostfixInstance(tmp_path_factory.mktemp("plain"), myhostname="relay.test") as pf:
        yield pf


@pytest.fixture(scope="module")
def dns() -> Iterator[DNSServer]:
    with DNSServer(ZONE) as server:
        yield server


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(dump=True) as s:
        yield s


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'mailcase.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def _enqueue(db: Engine, *rcpts: str, mail_from: str = "a@sender.test") -> tuple[str, str]:
    mid = f"<{uuid.uuid4().hex}@sender.test>"
    content = f"From: {mail_from}\r\nSubject: relay\r\nMessage-ID: {mid}\r\n\r\nx\r\n"
    with begin_write(db) as conn:
        qid = queue_enqueue.enqueue(conn, mail_from=mail_from, rcpt_to=list(rcpts),
                                    content=content.encode())
    return qid, mid


def _attempts(db: Engine, qid: str) -> dict[str, dict[str, object]]:
    return {a["recipient"]: a for a in show(db, qid)["attempts"]}


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_filter_routes_through_an_auth_relay_over_verified_tls(
    mechanism: str, smarthost: PostfixInstance, sasl: DovecotAuth, dns: DNSServer,
    sink: SmtpSink, db: Engine, workdir: Path, tmp_path: Path,
) -> None:
    relays.add_relay(db, Settings(data_dir=tmp_path), name="smart", host="relay.test", port=smarthost.smtpd_port,
                     tls_mode="preferred", auth_mechanism=mechanism, username="relayuser",
                     password=PASSWORD)
    relays.add_filter(db, relay="smart", recipient="*.routed.test")
    settings = delivery_settings(tmp_path, dns.address, mx_port=sink.port,
                                 ca_file=workdir / "ca.pem")
    qid, mid = _enqueue(db, "x@a.routed.test", "y@other.test")
    await run_until_settled(DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery))
    att = _attempts(db, qid)
    via = att["x@a.routed.test"]
    assert via["result"] == "delivered" and via["relay"] == "smart", via
    assert via["tls_mode"] == "required_verify"  # AUTH forces it, whatever was asked
    assert via["tls_verified"] and via["verified_by"] == "CA"
    assert via["remote_host"] == "relay.test" and via["remote_port"] == smarthost.smtpd_port
    smarthost.wait_for_log(re.escape(f"message-id={mid}"), timeout=10)
    assert re.search(rf"sasl_method={mechanism}, sasl_username=relayuser", smarthost.maillog())
    assert sasl.requests[-1] == (mechanism, True)  # over TLS
    direct = att["y@other.test"]
    assert direct["result"] == "delivered" and direct["relay"] is None
    assert direct["remote_host"] == "mx.other.test"
    assert sink.message_ids() == {mid: 1}
    assert PASSWORD not in repr(relays.list_relays(db)) + repr(relays.load_table(db, settings))


async def test_wrong_password_defers_at_auth_and_sends_nothing(
    smarthost: PostfixInstance, sasl: DovecotAuth, dns: DNSServer, db: Engine, workdir: Path,
    tmp_path: Path,
) -> None:
    relays.add_relay(db, Settings(data_dir=tmp_path), name="smart", host="relay.test", port=smarthost.smtpd_port,
                     auth_mechanism="PLAIN", username="relayuser", password="wrong")
    relays.add_filter(db, relay="smart")
    settings = delivery_settings(tmp_path, dns.address, mx_port=1, ca_file=workdir / "ca.pem")
    qid, mid = _enqueue(db, "x@other.test")
    await run_until_settled(DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery))
    (a,) = show(db, qid)["attempts"]
    assert a["result"] == "transient" and a["stage"] == "auth" and a["reply_code"] == 535
    assert "wrong" not in (a["reply_text"] or "")
    assert sasl.failures[-1] == "relayuser"
    assert f"message-id={mid}" not in smarthost.maillog()


async def test_credentials_are_never_sent_to_a_relay_without_tls(
    plain_smarthost: PostfixInstance, dns: DNSServer, db: Engine, workdir: Path,
    tmp_path: Path,
) -> None:
    relays.add_relay(db, Settings(data_dir=tmp_path), name="plain", host="relay.test", port=plain_smarthost.smtpd_port,
                     tls_mode="off", auth_mechanism="LOGIN", username="relayuser",
                     password=PASSWORD)
    relays.add_filter(db, relay="plain")
    settings = delivery_settings(tmp_path, dns.address, mx_port=1, ca_file=workdir / "ca.pem")
    qid, mid = _enqueue(db, "x@other.test")
    await run_until_settled(DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery))
    (a,) = show(db, qid)["attempts"]
    assert a["stage"] == "starttls" and "does not offer STARTTLS" in a["reply_text"]
    assert f"message-id={mid}" not in plain_smarthost.maillog()
    assert "AUTH" not in plain_smarthost.maillog()


async def test_relay_requiring_tls_that_does_not_offer_it_gets_no_content(
    plain_smarthost: PostfixInstance, dns: DNSServer, db: Engine, tmp_path: Path,
) -> None:
    relays.add_relay(db, Settings(data_dir=tmp_path), name="plain", host="mx:relays.test", port=plain_smarthost.smtpd_port,
                     tls_mode="required")
    relays.add_filter(db, relay="plain", sender="sender.test")
    settings = delivery_settings(tmp_path, dns.address, mx_port=1)
    qid, mid = _enqueue(db, "x@other.test")
    await run_until_settled(DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery))
    (a,) = show(db, qid)["attempts"]
    assert a["relay"] == "plain" and a["remote_host"] == "relay.test"  # found by MX
    assert a["result"] == "transient" and a["stage"] == "starttls"
    assert "TLS required (required) but the server does not offer STARTTLS" in a["reply_text"]
    assert f"message-id={mid}" not in plain_smarthost.maillog()


async def test_inactive_filter_and_relay_are_skipped(
    plain_smarthost: PostfixInstance, dns: DNSServer, sink: SmtpSink, db: Engine,
    tmp_path: Path,
) -> None:
    relays.add_relay(db, Settings(data_dir=tmp_path), name="off", host="relay.test", port=plain_smarthost.smtpd_port,
                     active=False)
    relays.add_filter(db, relay="off")
    relays.add_relay(db, Settings(data_dir=tmp_path), name="on", host="relay.test", port=plain_smarthost.smtpd_port)
    relays.add_filter(db, relay="on", recipient="nothing.test", active=False)
    settings = delivery_settings(tmp_path, dns.address, mx_port=sink.port)
    qid, mid = _enqueue(db, "x@other.test")
    await run_until_settled(DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery))
    (a,) = show(db, qid)["attempts"]
    assert a["relay"] is None and a["result"] == "delivered"
    assert sink.message_ids() == {mid: 1}


async def test_port_465_relay_speaks_implicit_tls(
    ca: trustme.CA, plain_smarthost: PostfixInstance, dns: DNSServer, db: Engine,
    workdir: Path, tmp_path: Path,
) -> None:
    leaf = ca.issue_cert("implicit.relay.test")
    cert, key = workdir / "implicit-cert.pem", workdir / "implicit-key.pem"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    try:
        front = ImplicitTLSFrontend(plain_smarthost.smtpd_port, cert, key)
        await front.__aenter__()
    except OSError as e:
        pytest.skip(f"cannot listen on 127.0.0.2:465 here: {e}")
    try:
        relays.add_relay(db, Settings(data_dir=tmp_path), name="smtps", host="implicit.relay.test", port=465,
                         tls_mode="required_verify")
        relays.add_filter(db, relay="smtps")
        settings = delivery_settings(tmp_path, dns.address, mx_port=1,
                                     ca_file=workdir / "ca.pem")
        qid, mid = _enqueue(db, "x@other.test")
        await run_until_settled(DeliveryEngine(settings, db, hooks=build_outbound(settings).delivery))
    finally:
        await front.__aexit__(None, None, None)
    (a,) = show(db, qid)["attempts"]
    assert a["result"] == "delivered", a
    assert a["remote_ip"] == "127.0.0.2" and a["remote_port"] == 465
    assert a["tls_version"] in ("TLSv1.2", "TLSv1.3") and a["verified_by"] == "CA"
    assert front.connections == 1 and front.versions[0] == a["tls_version"]
    plain_smarthost.wait_for_log(re.escape(f"message-id={mid}"), timeout=10)
