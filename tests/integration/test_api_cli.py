"""The HTTP API, CLI and configuration of a running instance, used as an admin would."""

from __future__ import annotations

import csv
import io
import json
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import forkserver
from tests.support.platform import Platform, free_port, running_platform


def test_api_and_metrics_require_token_and_health_does_not(platform: Platform) -> None:
    r = httpx.get(platform.http_base + "/api/v1/email-log")
    assert r.status_code == 401
    r = httpx.get(platform.http_base + "/api/v1/addresses", headers={"Authorization": "Bearer mc_wrong"})
    assert r.status_code == 401
    assert httpx.get(platform.http_base + "/healthz").json()["status"] == "ok"
    # /metrics needs the token since issue 11 (every route but /healthz and the docs does).
    assert httpx.get(platform.http_base + "/metrics").status_code == 401
    with platform.api() as api:
        metrics = api.get("/metrics").text
    assert "mailcase_smtp_connections_total" in metrics
    assert "mailcase_spool_commit_seconds" in metrics
    assert "mailcase_pipeline_backlog_age_seconds" in metrics  # issue 13: is processing keeping up
    assert httpx.get(platform.http_base + "/openapi.json").json()["info"]["title"] == "mailcase"


def test_addresses_via_api_take_effect_on_smtp_at_once(platform: Platform) -> None:
    with platform.api() as api:
        r = api.post("/api/v1/addresses", json={"address": "Sales@Example.test", "require_tls": False})
        assert r.status_code == 201, r.text
        assert r.json()["address"] == "sales@example.test"
        assert api.post("/api/v1/addresses", json={"address": "sales@example.test"}).status_code == 409
        assert api.post("/api/v1/addresses", json={"address": "not an address"}).status_code == 422
        with smtplib.SMTP(*platform.smtp, timeout=10) as s:
            s.ehlo("api.test")
            s.mail("a@sender.test")
            assert s.rcpt("sales@example.test")[0] == 250
        assert api.patch("/api/v1/addresses/sales@example.test", json={"require_tls": True}).json()["require_tls"]
        with smtplib.SMTP(*platform.smtp, timeout=10) as s:
            s.ehlo("api.test")
            s.mail("a@sender.test")
            assert s.rcpt("sales@example.test")[0] == 530
        assert api.delete("/api/v1/addresses/sales@example.test").status_code == 204
        assert api.get("/api/v1/addresses/sales@example.test").status_code == 404
        with smtplib.SMTP(*platform.smtp, timeout=10) as s:
            s.ehlo("api.test")
            s.mail("a@sender.test")
            assert s.rcpt("sales@example.test")[0] == 550


def test_address_added_by_cli_is_accepted_by_running_server(platform: Platform) -> None:
    platform.cli("address", "add", "cli-added@example.test")
    with smtplib.SMTP(*platform.smtp, timeout=10) as s:
        s.ehlo("cli.test")
        s.mail("a@sender.test")
        assert s.rcpt("cli-added@example.test")[0] == 250


def test_email_log_filters_and_exports(platform: Platform) -> None:
    with smtplib.SMTP(*platform.smtp, timeout=10) as s:
        s.sendmail("filter@sender.test", ["support@example.test"], b"Subject: f\r\n\r\nx\r\n")
        s.mail("filter@sender.test")
        s.rcpt("nope@example.test")
    with platform.api() as api:
        # The acceptor processes log into their spool files; the server moves the entries into
        # the database within about a second (the CLI moves them itself before it reads).
        deadline = time.monotonic() + 10
        while True:
            rows = api.get("/api/v1/email-log", params={"address": "filter@sender.test"}).json()
            if {r["outcome"] for r in rows} >= {"accepted", "rejected"}:
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.1)
        rejected = api.get("/api/v1/email-log", params={"address": "filter@sender.test", "outcome": "rejected"}).json()
        assert rejected and all(r["outcome"] == "rejected" for r in rejected)
        assert rejected[0]["rcpt_to"] == ["nope@example.test"]
        future = api.get("/api/v1/email-log", params={"since": "2999-01-01T00:00:00Z"}).json()
        assert future == []
        r = api.get("/api/v1/email-log", params={"address": "filter@sender.test", "format": "csv"})
        assert r.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(r.text)))
        assert {row["outcome"] for row in table} >= {"accepted", "rejected"}
        assert api.get("/api/v1/email-log", params={"limit": 0}).status_code == 422
    out = platform.cli("log", "--csv", "--address", "filter@sender.test").stdout
    assert "accepted" in out and "rejected" in out
    text = platform.cli("log", "--address", "filter@sender.test").stdout
    assert "rejected" in text


def test_token_is_shown_once_and_stored_hashed(platform: Platform) -> None:
    token = platform.cli("token", "create", "ops").stdout.strip()
    assert token.startswith("mc_") and len(token) > 30
    listing = platform.cli("token", "list").stdout
    assert "ops" in listing and token not in listing
    db = (platform.data_dir / "mailcase.db").read_bytes()
    assert token.encode() not in db
    r = httpx.get(platform.http_base + "/api/v1/addresses", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    platform.cli("token", "revoke", "ops")
    r = httpx.get(platform.http_base + "/api/v1/addresses", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


def test_config_show_and_bad_config_fail_clearly(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "MAILCASE_INBOUND__TLS": "required", "HOME": str(tmp_path)}
    # A fresh interpreter, as a user starts it (the other commands come from the fork server,
    # which imports the modules beforehand; test_make_run_style_start_... does the same for serve).
    out = subprocess.run([sys.executable, "-m", "mailcase", "--data-dir", str(tmp_path), "config", "show"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'tls = "required"' in out.stdout
    assert "max_message_size = 36700160" in out.stdout
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[inbound]\nmax_mesage_size = 10\n')
    bad = forkserver.run(["serve", "--config", str(cfg), "--data-dir", str(tmp_path)], env=env, timeout=60)
    assert bad.returncode == 2
    assert "inbound.max_mesage_size" in bad.stderr and "unknown key" in bad.stderr
    cfg.write_text('[inbound]\ntls = "sometimes"\n')
    plain_env = {k: v for k, v in env.items() if not k.startswith("MAILCASE_")}
    bad = forkserver.run(["--config", str(cfg), "config", "show"], env=plain_env, timeout=60)
    assert bad.returncode == 2 and "inbound.tls" in bad.stderr
    bad = forkserver.run(["serve", "--data-dir", str(tmp_path), "--smtp-listen", "localhost:notaport"],
                         env=env, timeout=60)
    assert bad.returncode == 2 and "inbound.listen" in bad.stderr


def test_global_tls_required_refuses_plaintext_mail(tmp_path: Path, client_tls: ssl.SSLContext) -> None:
    with running_platform(tmp_path, env={"MAILCASE_INBOUND__TLS": "required"}) as p:
        p.cli("address", "add", "support@example.test")
        with smtplib.SMTP(*p.smtp, timeout=10) as s:
            s.ehlo("plain.test")
            code, text = s.mail("a@sender.test")
            assert code == 530 and b"STARTTLS" in text
        with smtplib.SMTP(*p.smtp, timeout=10) as s:
            s.starttls(context=client_tls)
            s.ehlo("tls.test")
            assert s.sendmail("a@sender.test", ["support@example.test"], b"Subject: t\r\n\r\nok\r\n") == {}


@pytest.mark.parametrize("processes", ["1", "3"])
def test_connection_limit_per_ip_answers_421(tmp_path: Path, processes: str) -> None:
    """The limit holds for all acceptor processes together (their counts are shared)."""
    env = {"MAILCASE_INBOUND__MAX_CONNECTIONS_PER_IP": "4", "MAILCASE_INBOUND__PROCESSES": processes}
    with running_platform(tmp_path, env=env) as p:
        held = [socket.create_connection(p.smtp, timeout=10) for _ in range(4)]
        try:
            for h in held:
                assert h.recv(1024).startswith(b"220")
            for _ in range(3):  # whichever process the kernel hands them to
                extra = socket.create_connection(p.smtp, timeout=10)
                assert extra.recv(1024).startswith(b"421 4.7.0")
                extra.close()
            held.pop().close()
            deadline = time.monotonic() + 5
            while True:  # the freed slot is seen by every process
                again = socket.create_connection(p.smtp, timeout=10)
                greeting = again.recv(1024)
                again.close()
                if greeting.startswith(b"220"):
                    break
                assert time.monotonic() < deadline, greeting
                time.sleep(0.1)
        finally:
            for h in held:
                h.close()


def test_sighup_reloads_certificate_without_dropping_sessions(tmp_path: Path, client_tls: ssl.SSLContext) -> None:
    from mailcase.tls.certs import generate_self_signed

    with running_platform(tmp_path) as p:
        p.cli("address", "add", "support@example.test")
        cert_path = p.data_dir / "tls" / "server.crt"
        key_path = p.data_dir / "tls" / "server.key"
        before = cert_path.read_bytes()
        open_session = smtplib.SMTP(*p.smtp, timeout=10)
        open_session.ehlo("held.test")
        cert, key = generate_self_signed("reloaded.example.test")
        key_path.write_bytes(key)
        cert_path.write_bytes(cert)
        assert p.proc is not None
        p.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            with socket.create_connection(p.smtp, timeout=10) as raw:
                raw.recv(1024)
                raw.sendall(b"EHLO x\r\n")
                time.sleep(0.1)
                raw.recv(4096)
                raw.sendall(b"STARTTLS\r\n")
                raw.recv(1024)
                with client_tls.wrap_socket(raw, server_hostname="x") as t:
                    der = t.getpeercert(binary_form=True)
            if der != ssl.PEM_cert_to_DER_cert(before.decode()):
                break
            assert time.monotonic() < deadline, "certificate not reloaded"
            time.sleep(0.2)
        # The session opened before the reload still works.
        assert open_session.sendmail("a@sender.test", ["support@example.test"], b"Subject: s\r\n\r\nx\r\n") == {}
        open_session.quit()


def test_serve_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """The whole platform on PostgreSQL: accept, store, process, log."""
    with running_platform(tmp_path, env={"MAILCASE_DATABASE__URL": pg_url}) as p:
        p.cli("address", "add", "pg@example.test")
        with smtplib.SMTP(*p.smtp, timeout=10) as s:
            assert s.sendmail("a@sender.test", ["pg@example.test"],
                              b"Message-ID: <pg-1@sender.test>\r\nSubject: pg\r\n\r\nx\r\n") == {}
        deadline = time.monotonic() + 15
        while True:
            rows = json.loads(p.cli("messages", "list", "--json").stdout)
            if rows and rows[0]["state"] == "processed":
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
        assert rows[0]["message_id"] == "<pg-1@sender.test>"
    assert not (tmp_path / "data" / "mailcase.db").exists()


def test_make_run_style_start_uses_embedded_defaults(tmp_path: Path) -> None:
    """`mailcase serve` with only --data-dir: SQLite and a generated P-256 certificate there."""
    smtp, http = free_port(), free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "mailcase", "--data-dir", str(tmp_path / "var"), "serve",
                             "--smtp-listen", f"127.0.0.1:{smtp}", "--http-listen", f"127.0.0.1:{http}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        from tests.support.platform import wait_port

        wait_port("127.0.0.1", smtp, 60, proc)
        wait_port("127.0.0.1", http, 60, proc)
        assert (tmp_path / "var" / "mailcase.db").exists()
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec

        cert = x509.load_pem_x509_certificate((tmp_path / "var" / "tls" / "server.crt").read_bytes())
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert oct((tmp_path / "var" / "tls" / "server.key").stat().st_mode & 0o777) == "0o600"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode(errors="replace")
    assert b"mailcase ready" in out



def test_serve_on_a_port_in_use_fails_with_one_clear_line(tmp_path: Path) -> None:
    """Also a port held by another mailcase: a second instance must not start and split the
    connections with the first."""
    with running_platform(tmp_path / "first") as first:
        proc = subprocess.run(
            [sys.executable, "-m", "mailcase", "--data-dir", str(tmp_path / "second"), "serve",
             "--smtp-listen", f"127.0.0.1:{first.smtp[1]}",
             "--http-listen", f"127.0.0.1:{free_port()}"],
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines() == [
            f"mailcase: cannot listen for SMTP on 127.0.0.1:{first.smtp[1]}: Address already in "
            "use; stop what is using it, or choose another address with --smtp-listen or "
            "[inbound] listen."
        ]
        assert "Traceback" not in proc.stdout + proc.stderr


def test_maillog_lines_to_a_file_are_greppable_by_queue_id(tmp_path: Path) -> None:
    maillog = tmp_path / "mail.log"
    with running_platform(tmp_path, env={"MAILCASE_LOG__MAILLOG": str(maillog)}) as p:
        p.cli("address", "add", "support@example.test")
        with smtplib.SMTP(*p.smtp, timeout=10) as s:
            s.ehlo("maillog.test")
            s.mail("a@sender.test")
            assert s.rcpt("nobody@example.test")[0] == 550
            s.rset()
            s.sendmail("a@sender.test", ["support@example.test"], b"Message-ID: <ml@x>\r\n\r\nx\r\n")
        qid = json.loads(p.cli("messages", "list", "--json").stdout)[0]["queue_id"]
        deadline = time.monotonic() + 10
        while f"{qid}: status=processed" not in maillog.read_text():
            assert time.monotonic() < deadline, maillog.read_text()
            time.sleep(0.2)
    lines = [line for line in maillog.read_text().splitlines() if qid in line]
    assert any("status=queued" in line and "from=<a@sender.test>" in line and "tls=plaintext" in line for line in lines)
    assert any("mailcase/pipeline" in line and "status=processed" in line for line in lines)
    reject = [line for line in maillog.read_text().splitlines() if "reject=RCPT" in line]
    assert reject and "to=<nobody@example.test>" in reject[0] and "550 5.1.1" in reject[0]


def test_quarantine_list_and_retry_from_the_cli(tmp_path: Path) -> None:
    """A message the pipeline could not process is listed with its error and retried."""
    import asyncio
    import datetime as dt

    from mailcase.storage import messages
    from mailcase.storage.db import make_engine, upgrade
    from mailcase.storage.spool import Spool, SpooledMessage

    data = tmp_path / "data"
    engine = make_engine(f"sqlite:///{data / 'mailcase.db'}")
    upgrade(engine)
    now = dt.datetime.now(dt.UTC)
    msg = SpooledMessage(
        queue_id="QTEST0001", received_at=now, client_ip="192.0.2.7", helo="h", mail_from="a@b.test",
        rcpt_to=("q@example.test",), tls_version=None, tls_cipher=None, tls_bits=None, requiretls=False,
        smtputf8=False, body_type=None, size=12, message_id="<q@b.test>", content=b"Subject: q\r\n\r\n",
    )

    async def store() -> None:
        spool = Spool(engine)
        spool.start()
        try:
            await spool.store(msg, 250, "2.0.0 OK: queued as QTEST0001")
        finally:
            spool.close()

    asyncio.run(store())
    assert messages.mark_quarantined(engine, "QTEST0001", "ValueError: cannot route")
    engine.dispose()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    listed = forkserver.run(["--data-dir", str(data), "quarantine", "list", "--json"], env=env, timeout=60)
    rows = json.loads(listed.stdout)
    assert [(r["queue_id"], r["error"]) for r in rows] == [("QTEST0001", "ValueError: cannot route")]
    none = forkserver.run(["--data-dir", str(data), "quarantine", "retry", "NOPE"], env=env, timeout=60)
    assert none.returncode == 1 and "no quarantined message" in none.stderr
    retried = forkserver.run(["--data-dir", str(data), "quarantine", "retry", "QTEST0001"], env=env, timeout=60)
    assert retried.returncode == 0 and "1 message" in retried.stdout
    state = json.loads(forkserver.run(["--data-dir", str(data), "messages", "list", "--json"], env=env,
                                      timeout=60).stdout)[0]["state"]
    assert state == "received"
