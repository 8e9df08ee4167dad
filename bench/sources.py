#!/usr/bin/env python3
"""Mailbox-source benchmark (issue 19): how fast a 10 000-message mailbox is taken, beside the
same messages over SMTP. Not a test.

1. Starts Debian's Dovecot on loopback (tests/support/dovecot.py; root, as the tests) and puts
   --messages messages (the Email-to-Case bench's mix, bench/cases.py) into one user's INBOX as
   maildir files (Dovecot indexes them at the first SELECT, which is counted).
2. Instance "imap": a fresh `mailcase serve` (SQLite, maillog off, DNS on a local server) with
   a routing address; the clock starts when `mailcase source add` has stored the source
   (implicit TLS, verified certificate, after=seen) and reads the times at which every message
   is in the spool (inbound_messages) and on a case (case_emails), polled every 20 ms.
3. Instance "smtp": another fresh instance; the same messages over SMTP from 20 kept-open
   sessions (-s), the same two times.

It prints both lines, then the ratios imap/smtp. Run as root: `.venv/bin/python bench/sources.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import pwd
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import cases as smtp_bench  # noqa: E402
from tests.support.dnsserver import DNSServer  # noqa: E402
from tests.support.dovecot import Dovecot, dovecot_unavailable, run_dovecot  # noqa: E402
from tests.support.platform import free_port, wait_port  # noqa: E402

ROUTING = smtp_bench.ROUTING
say = smtp_bench.say


@dataclass
class Result:
    path: str
    messages: int
    spool_s: float
    cases_s: float

    def line(self) -> str:
        return (f"{self.path:>5}: {self.messages} messages in the spool in {self.spool_s:.2f}s "
                f"= {self.messages / self.spool_s:.0f}/s; on cases in {self.cases_s:.2f}s "
                f"= {self.messages / self.cases_s:.0f}/s")


def count(db: Path, table: str) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return 0
    try:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def fill_maildir(dc: Dovecot, user: str, msgs: list[tuple[str, bytes]]) -> None:
    nobody = pwd.getpwnam("nobody")
    root = dc.maildir(user)
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(exist_ok=True)
        os.chown(root / sub, nobody.pw_uid, nobody.pw_gid)
    stamp = int(time.time())
    for i, (sender, content) in enumerate(msgs):
        path = root / "new" / f"{stamp}.M{i}P{os.getpid()}.bench"
        path.write_bytes(f"Return-Path: <{sender}>\r\n".encode() + content)
        os.chown(path, nobody.pw_uid, nobody.pw_gid)


class Instance:
    def __init__(self, work: Path, name: str, config: str) -> None:
        self.data = work / name
        self.data.mkdir(parents=True)
        self.config = self.data / "mailcase.toml"
        self.config.write_text(config)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
        self.smtp, self.http = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, input: str | None = None) -> None:
        subprocess.run([sys.executable, "-m", "mailcase", "--config", str(self.config),
                        "--data-dir", str(self.data), *args], env=self.env, input=input,
                       text=True, capture_output=True, timeout=300, check=True)

    def start(self) -> None:
        log = open(self.data / "serve.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailcase", "--config", str(self.config), "serve",
             "--data-dir", str(self.data), "--smtp-listen", f"127.0.0.1:{self.smtp}",
             "--http-listen", f"127.0.0.1:{self.http}"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_port("127.0.0.1", self.smtp, 120, self.proc)
        wait_port("127.0.0.1", self.http, 120, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def wait(self, n: int, started: float, deadline: float,
             spool_only: bool = False) -> tuple[float, float]:
        db = self.data / "mailcase.db"
        spool_at = cases_at = None
        while time.monotonic() < deadline and cases_at is None:
            now = time.time()
            if spool_at is None and count(db, "inbound_messages") >= n:
                spool_at = now
            if spool_at is not None and (spool_only or count(db, "case_emails") >= n):
                cases_at = now
            time.sleep(0.02)
        if cases_at is None or spool_at is None:
            raise SystemExit(f"not done in time: {count(db, 'inbound_messages')} spooled, "
                             f"{count(db, 'case_emails')} on cases; see {self.data}/serve.log")
        return spool_at - started, cases_at - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--messages", type=int, default=10_000)
    p.add_argument("-s", "--sessions", type=int, default=20)
    p.add_argument("--batch", type=int, default=500, help="[sources] batch_size")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--spool-only", action="store_true",
                   help="run no pipeline (roles smtp,web,fetch): the accepting alone")
    args = p.parse_args(argv)
    if (why := dovecot_unavailable()) is not None:
        raise SystemExit(why)
    rng = random.Random(19)
    msgs = [smtp_bench.message(k, 0, rng) for k in range(args.messages)]
    work = Path(tempfile.mkdtemp(prefix="mailcase-bench-sources-"))
    with DNSServer({}) as dns, run_dovecot({"bench": "pw-bench"}) as dc:
        base = (f'[server]\nhostname = "mx.bench.test"\n[log]\nmaillog = "none"\n'
                f'level = "WARNING"\n[dns]\nnameservers = ["{dns.address}"]\ntimeout = 2.0\n'
                f'[sources]\nca_file = "{dc.ca_file}"\nbatch_size = {args.batch}\n')
        fill_maildir(dc, "bench", msgs)
        if args.spool_only:
            base = base.replace('[server]\n', '[server]\nroles = ["smtp", "web", "fetch"]\n', 1)
        results = []
        imap = Instance(work, "imap", base)
        imap.cli("init")
        imap.cli("routing", "add", ROUTING)
        imap.start()
        try:
            imap.cli("source", "add", "bench", "--host", "localhost", "--port",
                     str(dc.imaps_port), "--username", "bench", "--secret-stdin",
                     "--address", ROUTING, input="pw-bench\n")
            # The clock starts when the source was stored (the CLI's own start-up, seconds on
            # a loaded machine, is not the agent's); the running server sees it within 2 s.
            con = sqlite3.connect(f"file:{imap.data / 'mailcase.db'}?mode=ro", uri=True)
            created = con.execute("SELECT created_at FROM mail_sources").fetchone()[0]
            con.close()
            started = dt.datetime.fromisoformat(created).replace(tzinfo=dt.UTC).timestamp()
            results.append(Result("imap", args.messages,
                                  *imap.wait(args.messages, started,
                                             time.monotonic() + args.timeout, args.spool_only)))
            say(results[-1].line())
        finally:
            imap.stop()
        smtp = Instance(work, "smtp", base)
        smtp.cli("init")
        smtp.cli("routing", "add", ROUTING)
        smtp.start()
        try:
            started = time.time()
            counts = asyncio.run(smtp_bench._drive(smtp.smtp, msgs, args.sessions,
                                                   time.monotonic() + args.timeout))
            if counts["errors"]:
                say(f"  SMTP client errors: {counts['errors']}")
            results.append(Result("smtp", args.messages,
                                  *smtp.wait(args.messages, started,
                                             time.monotonic() + args.timeout, args.spool_only)))
            say(results[-1].line())
        finally:
            smtp.stop()
    a, b = results
    say(f"ratio imap/smtp: spool {b.spool_s / a.spool_s:.2f}x, cases {b.cases_s / a.cases_s:.2f}x"
        f"  (work dir {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
