"""The Email-to-Case agent (issue 19) against Debian's Dovecot on loopback.

A real `mailcase serve`, a real Dovecot started here with its own configuration and a
certificate from a test CA (trustme), messages put into mailboxes with IMAP APPEND; cases and
the email log read back from the database, sources through the CLI. Each test has a mailbox
user of its own so the tests do not depend on each other's order.
"""

from __future__ import annotations

import json
import re
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from imapclient import IMAPClient
from sqlalchemy import create_engine, text

from tests.support.dnsserver import DNSServer
from tests.support.dovecot import Dovecot, dovecot_unavailable, run_dovecot
from tests.support.peers import needs
from tests.support.platform import Platform, running_platform

pytestmark = needs(dovecot_unavailable())

WAIT = 30.0  # bounded polling for what the server does in the background
USERS = {u: f"pw-{u}" for u in ("cases", "idle", "move", "delete", "badcert", "badpw",
                                "plain", "starttls", "probe", "crash", "oauth", "big", "trusted",
                                "folders", "skips")}
ROUTE = "support@example.test"


TOKEN = "oauth2-token-for-support"  # what the admin pastes for an XOAUTH2 source


class _Introspection(BaseHTTPRequestHandler):
    """The OAuth2 provider's token introspection (RFC 7662) that Dovecot asks."""

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
        active = form.get("token") == [TOKEN]
        data = json.dumps({"active": True, "username": "oauth"} if active
                          else {"active": False}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    idp = ThreadingHTTPServer(("127.0.0.1", 0), _Introspection)
    threading.Thread(target=idp.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{idp.server_address[1]}/introspect"
        with run_dovecot(USERS, introspection_url=url) as dc:
            yield dc
    finally:
        idp.shutdown()
        idp.server_close()


def _config(dc: Dovecot, dns: DNSServer, **sources: Any) -> str:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in sources.items())
    return (
        '[server]\nhostname = "mx.mailcase.test"\n'
        f'[dns]\nnameservers = ["{dns.address}"]\ntimeout = 2.0\n'
        "[pipeline]\npoll_interval = 0.2\n"
        "[inbound]\nprocesses = 1\n"
        # Polling so slow that only IDLE can bring mail within WAIT; short back-off.
        f'[sources]\nca_file = "{dc.ca_file}"\npoll_interval = 600.0\nretry_base = 1.0\n'
        f"retry_max = 2.0\n{extra}"
    )


@pytest.fixture(scope="module")
def dns() -> Iterator[DNSServer]:
    with DNSServer({}) as server:
        yield server


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory, dovecot: Dovecot,
       dns: DNSServer) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("sources"), config=_config(dovecot, dns)) as p:
        p.cli("routing", "add", ROUTE, "--name", "Support")
        yield p


def imap(dc: Dovecot, user: str) -> IMAPClient:
    c = IMAPClient("localhost", port=dc.imaps_port, ssl=True,
                   ssl_context=ssl.create_default_context(cafile=str(dc.ca_file)))
    c.login(user, USERS[user])
    return c


def append(dc: Dovecot, user: str, n: int, tag: str, folder: str = "INBOX") -> list[str]:
    """Put `n` messages into the user's folder; their Message-IDs."""
    ids = [f"<{tag}-{i}@customer.test>" for i in range(n)]
    with imap(dc, user) as c:
        if not c.folder_exists(folder):
            c.create_folder(folder)
        for i, mid in enumerate(ids):
            c.append(folder, (f"From: Customer <c{i}@customer.test>\r\nTo: {ROUTE}\r\n"
                              f"Subject: {tag} {i}\r\nMessage-ID: {mid}\r\n"
                              "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\n"
                              f"Help me with {tag} {i}.\r\n").encode())
    return ids


def add_source(p: Platform, dc: Dovecot, name: str, *args: str, user: str | None = None,
               check: bool = True) -> Any:
    user = user or name
    return p.cli("source", "add", name, "--host", "localhost", "--port", str(dc.imaps_port),
                 "--username", user, "--secret-stdin", "--address", ROUTE, *args,
                 input=USERS.get(user, "x") + "\n", check=check)


def db(p: Platform) -> Any:
    return create_engine(f"sqlite:///{p.data_dir / 'mailcase.db'}")


def wait_for(what: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def case_counts(p: Platform, ids: list[str]) -> dict[str, int]:
    """Message-ID -> number of case emails holding it (inbound)."""
    engine = db(p)
    try:
        with engine.connect() as c:
            rows = c.execute(text("SELECT message_id, count(DISTINCT case_id) FROM case_emails "
                                  "WHERE direction = 'inbound' GROUP BY message_id")).all()
    finally:
        engine.dispose()
    found = {r[0]: r[1] for r in rows}
    return {m: found.get(m, 0) for m in ids}


def source_row(p: Platform, name: str) -> dict[str, Any]:
    rows = json.loads(p.cli("source", "list", "--json").stdout)
    return next(r for r in rows if r["name"] == name)


def flags(dc: Dovecot, user: str, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
    with imap(dc, user) as c:
        c.select_folder(folder, readonly=True)
        uids = c.search()
        return {u: d[b"FLAGS"] for u, d in c.fetch(uids, ["FLAGS"]).items()} if uids else {}


def metric(p: Platform, sample: str) -> float:
    """One sample of /metrics (0 when absent)."""
    with p.api() as api:
        text_ = api.get("/metrics").text
    for line in text_.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_appended_messages_become_cases_and_are_marked_seen(mc: Platform, dovecot: Dovecot) -> None:
    ids = append(dovecot, "cases", 3, "appended")
    add_source(mc, dovecot, "cases")
    assert wait_for(lambda: all(n == 1 for n in case_counts(mc, ids).values())), case_counts(mc, ids)
    # Changed on the server only after the spool's commit: all of them seen, none deleted.
    assert wait_for(lambda: all(b"\\Seen" in f for f in flags(dovecot, "cases").values()))
    assert len(flags(dovecot, "cases")) == 3
    engine = db(mc)
    with engine.connect() as c:
        log = c.execute(text("SELECT reply_text, tls_version, client_ip, rcpt_to FROM email_log "
                             "WHERE outcome = 'accepted' AND reply_text LIKE '%source cases %'"
                             )).all()
        stored = c.execute(text("SELECT count(*) FROM inbound_messages WHERE message_id LIKE "
                                "'<appended-%'")).scalar()
    engine.dispose()
    # The email log records the source (mailbox, folder, UID) and the IMAP connection's TLS.
    assert sorted(r.reply_text.rsplit(" ", 1)[1] for r in log) == ["1", "2", "3"]
    assert all("folder 'INBOX'" in r.reply_text for r in log)
    assert all(r.tls_version and r.tls_version.startswith("TLSv1.") for r in log)
    assert all(r.client_ip == "127.0.0.1" and ROUTE in r.rcpt_to for r in log)
    assert stored == 3
    with engine.connect() as c:  # the password is sealed at rest
        secret = c.execute(text("SELECT secret FROM mail_sources WHERE name = 'cases'")).scalar()
    engine.dispose()
    assert secret.startswith("aesgcm1:") and USERS["cases"] not in secret
    assert metric(mc, 'mailcase_source_messages_taken_total{tls="yes"}') >= 3
    assert re.search(r"folder 'INBOX': uidvalidity \d+, last uid taken 3",
                     mc.cli("source", "show", "cases").stdout)
    row = source_row(mc, "cases")
    assert row["state"] == "idle" and row["taken"] == 3 and row["last_error"] is None


def test_idle_delivers_a_new_message(mc: Platform, dovecot: Dovecot) -> None:
    add_source(mc, dovecot, "idle")
    assert wait_for(lambda: source_row(mc, "idle")["state"] == "idle")
    # Polling is every 600 s here: only IDLE brings this one within WAIT.
    ids = append(dovecot, "idle", 1, "pushed")
    assert wait_for(lambda: case_counts(mc, ids)[ids[0]] == 1), "IDLE did not bring the message"


def test_after_move_and_after_delete(mc: Platform, dovecot: Dovecot) -> None:
    moved = append(dovecot, "move", 2, "moved")
    deleted = append(dovecot, "delete", 2, "deleted")
    add_source(mc, dovecot, "move", "--after", "move", "--move-to", "Taken")
    add_source(mc, dovecot, "delete", "--after", "delete")
    assert wait_for(lambda: all(n == 1 for n in case_counts(mc, moved + deleted).values()))
    assert wait_for(lambda: flags(dovecot, "move") == {} and flags(dovecot, "delete") == {})
    assert len(flags(dovecot, "move", "Taken")) == 2


def test_wrong_certificate_is_refused_and_backs_off(mc: Platform, dovecot: Dovecot) -> None:
    """The certificate names localhost; a source naming 127.0.0.1 must not accept it."""
    ids = append(dovecot, "badcert", 1, "badcert")
    mc.cli("source", "add", "badcert", "--host", "127.0.0.1", "--port", str(dovecot.imaps_port),
           "--username", "badcert", "--secret-stdin", "--address", ROUTE,
           input=USERS["badcert"] + "\n")
    row = wait_for(lambda: (r := source_row(mc, "badcert"))["state"] == "backoff" and r)
    assert row, source_row(mc, "badcert")
    assert "certificate" in row["last_error"] and "ca_file" in row["last_error"]
    assert row["next_attempt_at"] is not None
    assert "BADCERT" not in json.dumps(row) and USERS["badcert"] not in json.dumps(row)
    time.sleep(2)  # a few back-off rounds: still nothing taken, nothing changed on the server
    assert case_counts(mc, ids)[ids[0]] == 0
    assert all(b"\\Seen" not in f for f in flags(dovecot, "badcert").values())
    assert metric(mc, 'mailcase_source_failures_total{kind="certificate"}') >= 2
    assert metric(mc, 'mailcase_sources{state="backoff"}') >= 1


def test_wrong_password_backs_off_with_the_reason_then_recovers(mc: Platform, dovecot: Dovecot) -> None:
    ids = append(dovecot, "badpw", 1, "badpw")
    mc.cli("source", "add", "badpw", "--host", "localhost", "--port", str(dovecot.imaps_port),
           "--username", "badpw", "--secret-stdin", "--address", ROUTE, input="wrong\n")
    row = wait_for(lambda: (r := source_row(mc, "badpw"))["state"] == "backoff" and r)
    assert row and "login as 'badpw' refused" in row["last_error"], source_row(mc, "badpw")
    listed = mc.cli("source", "list").stdout
    assert "backoff" in listed and "refused" in listed
    mc.cli("source", "set-secret", "badpw", "--secret-stdin", input=USERS["badpw"] + "\n")
    assert wait_for(lambda: case_counts(mc, ids)[ids[0]] == 1)
    assert wait_for(lambda: source_row(mc, "badpw")["last_error"] is None)


def test_a_vanished_folder_backs_off_with_the_reason(mc: Platform, dovecot: Dovecot) -> None:
    add_source(mc, dovecot, "gone", "--folder", "Gone", user="probe")
    row = wait_for(lambda: (r := source_row(mc, "gone"))["state"] == "backoff" and r)
    assert row and "cannot open folder 'Gone'" in row["last_error"], source_row(mc, "gone")
    mc.cli("source", "remove", "gone")


def test_plaintext_refused_unless_allowed_and_shown_as_such(mc: Platform, dovecot: Dovecot) -> None:
    res = mc.cli("source", "add", "plain", "--host", "localhost", "--port",
                 str(dovecot.imap_port), "--security", "plaintext", "--username", "plain",
                 "--secret-stdin", "--address", ROUTE, input="pw-plain\n", check=False)
    assert res.returncode != 0 and "--allow-plaintext" in res.stderr
    assert "plain" not in [r["name"] for r in json.loads(mc.cli("source", "list", "--json").stdout)]
    ids = append(dovecot, "plain", 1, "plain")
    mc.cli("source", "add", "plain", "--host", "localhost", "--port", str(dovecot.imap_port),
           "--security", "plaintext", "--allow-plaintext", "--username", "plain",
           "--secret-stdin", "--address", ROUTE, input="pw-plain\n")
    assert "PLAINTEXT" in mc.cli("source", "show", "plain").stdout
    assert "PLAINTEXT" in mc.cli("source", "list").stdout
    assert wait_for(lambda: case_counts(mc, ids)[ids[0]] == 1)


def test_xoauth2_source_with_a_bearer_token(mc: Platform, dovecot: Dovecot) -> None:
    ids = append(dovecot, "oauth", 1, "oauth")
    mc.cli("source", "add", "oauth", "--host", "localhost", "--port", str(dovecot.imaps_port),
           "--username", "oauth", "--auth", "xoauth2", "--secret-stdin", "--address", ROUTE,
           input="a-stale-token\n")
    row = wait_for(lambda: (r := source_row(mc, "oauth"))["state"] == "backoff" and r)
    assert row and "login as 'oauth' refused" in row["last_error"], source_row(mc, "oauth")
    mc.cli("source", "set-secret", "oauth", "--secret-stdin", input=TOKEN + "\n")
    assert wait_for(lambda: case_counts(mc, ids)[ids[0]] == 1)
    assert TOKEN not in mc.cli("source", "show", "oauth").stdout


def test_starttls_source(mc: Platform, dovecot: Dovecot) -> None:
    ids = append(dovecot, "starttls", 1, "starttls")
    mc.cli("source", "add", "starttls", "--host", "localhost", "--port", str(dovecot.imap_port),
           "--security", "starttls", "--username", "starttls", "--secret-stdin",
           "--address", ROUTE, input=USERS["starttls"] + "\n")
    assert wait_for(lambda: case_counts(mc, ids)[ids[0]] == 1)
    engine = db(mc)
    with engine.connect() as c:
        tls = c.execute(text("SELECT tls_version FROM inbound_messages WHERE message_id = :m"),
                        {"m": ids[0]}).scalar()
    engine.dispose()
    assert tls and tls.startswith("TLSv1.")


def test_source_test_pause_resume_remove(mc: Platform, dovecot: Dovecot) -> None:
    append(dovecot, "probe", 2, "probe")
    add_source(mc, dovecot, "probe", "--paused")
    out = mc.cli("source", "test", "probe").stdout
    assert "certificate verified" in out and "logged in as probe" in out
    assert "folder 'INBOX': 2 messages, 2 to take" in out
    assert "IDLE" in out and "mark them seen" in out
    assert flags(dovecot, "probe") and all(b"\\Seen" not in f for f in flags(dovecot, "probe").values())
    assert source_row(mc, "probe")["state"] == "paused"
    mc.cli("source", "resume", "probe")
    assert wait_for(lambda: source_row(mc, "probe")["taken"] == 2)
    mc.cli("source", "pause", "probe")
    mc.cli("source", "remove", "probe")
    res = mc.cli("source", "show", "probe", check=False)
    assert res.returncode != 0 and "no source 'probe'" in res.stderr
    bad = mc.cli("source", "test", "badpw-none", check=False)
    assert bad.returncode != 0 and "source list" in bad.stderr


@pytest.mark.slow
def test_sigkill_between_spool_and_server_every_message_in_exactly_one_case(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    """kill -9 of mailcase while a batch is in the spool but not yet changed on the server
    (nor its last UID recorded), then a restart: the batch is fetched again and every message
    ends in exactly one case, stored once in the spool, and moved once.

    The crash window is held open without timing: the move's target cannot be created (a file
    stands where Dovecot's maildir++ keeps the folder `Taken`), so the first batch is stored and
    its move fails, leaving the source backing off. Then mailcase is killed, the obstacle
    removed and mailcase started again."""
    total = 120
    ids = append(dovecot, "crash", total, "crash")
    obstacle = dovecot.maildir("crash") / ".Taken"
    obstacle.write_text("not a folder")
    with DNSServer({}) as dns, running_platform(
        tmp_path, config=_config(dovecot, dns, batch_size=25).replace(
            "[inbound]\n", "[inbound]\nmax_message_size = 4096\n"),
        env={"MAILCASE_LOG__MAILLOG": "none"},
    ) as p:
        p.cli("routing", "add", ROUTE)
        add_source(p, dovecot, "crash", "--after", "move", "--move-to", "Taken")
        # Beside it, a mailbox whose message is over this instance's size limit: it stays on
        # the server, untouched, with the reason shown (as SMTP's 552 leaves it with the sender),
        # and does not stop the source.
        with imap(dovecot, "big") as c:
            c.append("INBOX", b"From: a@customer.test\r\nMessage-ID: <big@customer.test>\r\n"
                              b"\r\n" + (b"y" * 78 + b"\r\n") * 80)
        add_source(p, dovecot, "big", "--after", "delete")
        engine = db(p)

        def stored() -> int:
            """Messages in the spool: the database, or the agent's spool file not moved yet."""
            with engine.connect() as c:
                c.execute(text("ATTACH DATABASE :f AS sp"),
                          {"f": str(p.data_dir / "spool" / "fetcher.db")})
                try:
                    return int(c.execute(text(
                        "SELECT count(*) FROM (SELECT queue_id FROM inbound_messages UNION "
                        "SELECT queue_id FROM sp.inbound_messages)")).scalar() or 0)
                finally:
                    c.execute(text("DETACH DATABASE sp"))

        row = wait_for(lambda: (r := source_row(p, "crash"))["state"] == "backoff" and r, 60)
        assert row and "move on the server failed" in row["last_error"], source_row(p, "crash")
        p.kill()
        at_kill = stored()
        assert at_kill == 25, at_kill  # the first batch: in the spool, still in INBOX
        assert len(flags(dovecot, "crash")) == total
        obstacle.unlink()
        p.start()
        assert wait_for(lambda: all(n >= 1 for n in case_counts(p, ids).values()), 120)
        assert wait_for(lambda: flags(dovecot, "crash") == {})
        # SIGTERM while the source waits in IDLE: a clean stop, not the 30 s kill of stop().
        assert p.stop(timeout=20) == 0
        with engine.connect() as c:
            spooled = c.execute(text("SELECT message_id, count(*) FROM inbound_messages "
                                     "GROUP BY message_id HAVING count(*) > 1")).all()
            total_spooled = c.execute(text("SELECT count(*) FROM inbound_messages")).scalar()
        engine.dispose()
    big = source_row(p, "big")
    assert big["state"] == "idle" and big["last_error"] is None, big
    assert case_counts(p, ["<big@customer.test>"])["<big@customer.test>"] == 0
    assert len(flags(dovecot, "big")) == 1  # not deleted: it was never stored
    counts = case_counts(p, ids)
    assert [m for m, n in counts.items() if n != 1] == []
    assert spooled == [] and total_spooled == total
    assert len(flags(dovecot, "crash", "Taken")) == total


def test_api_add_show_test_pause_remove(mc: Platform, dovecot: Dovecot) -> None:
    with mc.api() as api:
        body = {"name": "api", "host": "localhost", "port": dovecot.imaps_port,
                "username": "probe", "secret": USERS["probe"], "address": ROUTE, "paused": True}
        refused = api.post("/api/v1/sources", json={**body, "security": "plaintext"})
        assert refused.status_code == 400 and "allow_plaintext" in refused.text
        made = api.post("/api/v1/sources", json=body)
        assert made.status_code == 201, made.text
        assert "secret" not in made.json() and USERS["probe"] not in made.text
        assert api.post("/api/v1/sources", json=body).status_code == 400  # the name is taken
        shown = api.get("/api/v1/sources/api").json()
        assert shown["state"] == "paused" and shown["plaintext"] is False
        tested = api.post("/api/v1/sources/api/test").json()
        assert tested["ok"] and any("logged in as probe" in line for line in tested["lines"])
        trusted = api.put("/api/v1/sources/api/trusted",
                          json={"trusted_authserv_ids": ["MX.Mailbox.test", "mx2.mailbox.test"]})
        assert trusted.json()["trusted_authserv_ids"] == ["mx.mailbox.test", "mx2.mailbox.test"]
        bad = api.put("/api/v1/sources/api/trusted",
                      json={"trusted_authserv_ids": ["mx.test; spf=pass"]})
        assert bad.status_code == 400 and "authserv-id" in bad.text
        assert api.get("/api/v1/sources/api").json()["skipped"] == []
        assert api.post("/api/v1/sources/api/resume").json()["paused"] is False
        assert api.post("/api/v1/sources/api/pause").json()["paused"] is True
        assert api.delete("/api/v1/sources/api").status_code == 204
        assert api.get("/api/v1/sources/api").status_code == 404
        assert "api" not in [s["name"] for s in api.get("/api/v1/sources").json()]


VERIFIED = "verified@example.test"  # a routing address that requires an authenticated sender
MAILBOX = "mx.mailbox.test"  # the authserv-id of the team's mailbox server


def _raw(tag: str, sender: str, head: str = "") -> bytes:
    return (f"{head}Return-Path: <{sender}>\r\nFrom: <{sender}>\r\nTo: {VERIFIED}\r\n"
            f"Subject: {tag}\r\nMessage-ID: <{tag}@customer.test>\r\n"
            f"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nAbout {tag}.\r\n").encode()


def refused(p: Platform) -> set[str]:
    engine = db(p)
    try:
        with engine.connect() as c:
            rows = c.execute(text("SELECT message_id FROM email_log WHERE reason LIKE "
                                  "'%sender not authenticated%'")).all()
    finally:
        engine.dispose()
    return {r[0] for r in rows}


def test_verdicts_of_fetched_mail_come_from_the_trusted_servers_headers(
    mc: Platform, dovecot: Dovecot, dns: DNSServer
) -> None:
    """A routing address requiring an authenticated sender sees the verdicts the trusted
    mailbox server wrote; forged fields (another authserv-id, or the trusted one below the
    server's topmost) and the SPF of the IMAP connection (Dovecot is at 127.0.0.1, which
    this sender's SPF record allows) never make a message pass."""
    mc.cli("routing", "add", VERIFIED, "--require-authenticated-sender")
    dns.set("spf-ok.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    received = "Received: from mx.sender.test by mx.mailbox.test; Fri, 4 Dec 2026 10:00:01 +0000\r\n"
    good = _raw("trusted-pass", "c@customer.test",
                f"Authentication-Results: {MAILBOX}; spf=pass smtp.mailfrom=customer.test\r\n"
                + received)
    other_id = _raw("other-id", "c@customer.test",
                    "Authentication-Results: mx.evil.test; spf=pass smtp.mailfrom=customer.test; "
                    "dmarc=pass header.from=customer.test\r\n" + received)
    below = _raw("below-topmost", "c@customer.test",
                 f"Authentication-Results: {MAILBOX}; spf=fail smtp.mailfrom=customer.test\r\n"
                 + received + f"Authentication-Results: {MAILBOX}; spf=pass "
                 "smtp.mailfrom=customer.test; dmarc=pass header.from=customer.test\r\n")
    connection_spf = _raw("connection-spf", "c@spf-ok.test")
    with imap(dovecot, "trusted") as c:
        for raw in (other_id, below, connection_spf, good):
            c.append("INBOX", raw)
    add_source(mc, dovecot, "trusted", "--trust-authserv-id", MAILBOX, "--address", VERIFIED)
    mc.cli("source", "show", "trusted")  # the list is shown (and set)
    row = json.loads(mc.cli("source", "show", "trusted", "--json").stdout)
    assert row["trusted_authserv_ids"] == MAILBOX
    forged = {"<other-id@customer.test>", "<below-topmost@customer.test>",
              "<connection-spf@customer.test>"}
    assert wait_for(lambda: forged <= refused(mc)), refused(mc)
    ok = "<trusted-pass@customer.test>"
    assert wait_for(lambda: case_counts(mc, [ok])[ok] == 1), "the trusted pass made no case"
    assert case_counts(mc, sorted(forged)) == {m: 0 for m in forged}


def test_idle_on_several_folders_brings_mail_of_the_second(mc: Platform, dovecot: Dovecot) -> None:
    """One IDLE connection per folder: polling is every 600 s here, so only IDLE on the
    second folder brings its new message within the bounded wait."""
    with imap(dovecot, "folders") as c:
        c.create_folder("Second")
    add_source(mc, dovecot, "folders", "--folder", "INBOX", "--folder", "Second")
    assert wait_for(lambda: source_row(mc, "folders")["state"] == "idle")
    first = append(dovecot, "folders", 1, "first-folder")
    second = append(dovecot, "folders", 1, "second-folder", folder="Second")
    assert wait_for(lambda: case_counts(mc, second)[second[0]] == 1), "no IDLE on the 2nd folder"
    assert wait_for(lambda: case_counts(mc, first)[first[0]] == 1)
    out = mc.cli("source", "test", "folders").stdout
    assert "IDLE (pushed by the server) on 2 connection(s)" in out


def _has_spool(db_file: Path) -> bool:
    if not db_file.exists():
        return False
    con = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM sqlite_master WHERE name = "
                           "'inbound_messages'").fetchone()[0] == 1
    finally:
        con.close()


def _refuse_in(db_file: Path, message_id: str) -> None:
    """Make the spool's database refuse one message's row, as a constraint would (once the
    agent has made it: the fetch role starts after the ports answer)."""
    assert wait_for(lambda: _has_spool(db_file)), f"{db_file} was not made"
    con = sqlite3.connect(db_file)
    try:
        con.execute(f"CREATE TRIGGER IF NOT EXISTS refuse_for_test BEFORE INSERT ON "
                    f"inbound_messages WHEN NEW.message_id = '{message_id}' BEGIN "
                    "SELECT RAISE(ABORT, 'refused for the test'); END")
        con.commit()
    finally:
        con.close()


def test_oversized_and_refused_messages_do_not_block_the_folder(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    """A message over the size limit, and one the spool refuses, are recorded (email log,
    `source show`), moved to the source's skip folder, and the messages after them taken."""
    with imap(dovecot, "skips") as c:
        for i, body in enumerate([b"small", b"y" * 6000, b"small", b"refused", b"small"]):
            mid = b"<refused@customer.test>" if body == b"refused" else b"<skips-%d@c.test>" % i
            c.append("INBOX", b"From: a@customer.test\r\nSubject: skips\r\nMessage-ID: " + mid
                     + b"\r\n\r\n" + body + b"\r\n")
    small = ["<skips-0@c.test>", "<skips-2@c.test>", "<skips-4@c.test>"]
    with DNSServer({}) as dns, running_platform(
        tmp_path, config=_config(dovecot, dns).replace(
            "[inbound]\n", "[inbound]\nmax_message_size = 4096\n"),
    ) as p:
        p.cli("routing", "add", ROUTE)
        # The mailbox agent's own spool file (SQLite): where its commits go first.
        _refuse_in(p.data_dir / "spool" / "fetcher.db", "<refused@customer.test>")
        add_source(p, dovecot, "skips", "--skip-to", "NotTaken")
        assert wait_for(lambda: all(n == 1 for n in case_counts(p, small).values())), \
            case_counts(p, small)
        assert wait_for(lambda: len(flags(dovecot, "skips", "NotTaken")) == 2)
        row = source_row(p, "skips")
        assert row["state"] == "idle" and row["last_error"] is None, row
        shown = p.cli("source", "show", "skips").stdout
        assert "uid 2 (moved to 'NotTaken'): 6" in shown and "over inbound.max_message_size" in shown
        assert "uid 4 (moved to 'NotTaken'): refused by the spool" in shown
        engine = db(p)
        with engine.connect() as c:
            logged = c.execute(text("SELECT reason FROM email_log WHERE outcome = 'rejected' "
                                    "AND reason LIKE '%source skips%'")).scalars().all()
        engine.dispose()
        assert len(logged) == 2 and all("not taken" in r for r in logged), logged
        assert metric(p, "mailcase_source_messages_skipped_total") == 2
    # The three taken ones are seen in INBOX; the two others were moved, unseen.
    inbox = flags(dovecot, "skips")
    assert len(inbox) == 3 and all(b"\\Seen" in f for f in inbox.values())
    assert all(b"\\Seen" not in f for f in flags(dovecot, "skips", "NotTaken").values())
