#!/usr/bin/env python3
"""Email-to-Case benchmark: emails → cases per second, end to end, at two database sizes.

Not a test. For each size (default 10 000 and 1 000 000 existing cases) it:

1. makes a fresh instance (SQLite) with a routing address, and bulk-inserts the existing
   cases straight into the database (one email and one indexed Message-ID per case), in
   large transactions — bounded by --fill-timeout;
2. starts `mailcase serve` on free loopback ports (maillog off; mailcase's DNS pointed at a
   local DNS server from tests/support, so SPF/DKIM/DMARC run but never leave the machine);
3. sends --messages emails over SMTP from 20 concurrent senders (-s), half of them new
   requests, half replies whose In-Reply-To names a random existing case's Message-ID (the
   threading look-up that must stay indexed);
4. measures from the first SMTP connection to the moment the last case email row is
   committed (polled read-only every 20 ms), bounded by --load-timeout.

It prints one line per size, then both figures and their ratio (target: the figure at the
large size within 20% of the small one, i.e. ratio ≥ 0.80). See bench/README.md.

Beside them, in the same run and with the same client, messages and senders: Postfix's
*accept* rate (a Postfix instance on loopback whose every transport is `discard`, timed from
the first connection to the last 250 after DATA), and mailcase's email → case rate as a share
of it (issue 13's target: ≥ 1.0×, authentication on). `--no-postfix` leaves it out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import random
import shutil
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

from tests.support.dnsserver import DNSServer  # noqa: E402
from tests.support.platform import free_port, wait_port  # noqa: E402
from tests.support.postfix import PostfixInstance, PostfixUnavailable  # noqa: E402

ROUTING = "support@bench.example"
CUSTOMERS = 1000


def say(*args: object) -> None:
    print(*args, flush=True)


@dataclass
class Result:
    existing: int
    sent: int
    stored: int
    seconds: float
    fill_seconds: float
    errors: int

    @property
    def rate(self) -> float:
        return self.stored / self.seconds if self.seconds > 0 else 0.0


def _mailcase(data_dir: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mailcase", "--config", str(config), "--data-dir", str(data_dir), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=True)


def fill(db: Path, n: int, timeout: float) -> float:
    """Insert `n` cases with one email and one indexed Message-ID each; returns seconds."""
    started = time.monotonic()
    con = sqlite3.connect(db, timeout=60)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")  # bulk load only; the server runs with its own settings
    routing_id = con.execute("SELECT id FROM routing_addresses WHERE address = ?", (ROUTING,)).fetchone()[0]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    chunk = 50_000
    for start in range(1, n + 1, chunk):
        if time.monotonic() - started > timeout:
            raise SystemExit(f"filling {n} cases took more than {timeout:.0f}s (at {start - 1})")
        ids = range(start, min(n, start + chunk - 1) + 1)
        con.executemany(
            "INSERT INTO cases (id, number, subject, description, status, priority, origin, supplied_name,"
            " supplied_email, routing_address_id, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            ((i, i, f"Existing case {i}", "Existing description.", "Working", "Medium", "Email", "Customer",
              f"cust{i % CUSTOMERS}@customer.example", routing_id, now, now) for i in ids),
        )
        con.executemany(
            "INSERT INTO case_emails (id, case_id, direction, from_address, to_addresses, cc_addresses, subject,"
            " text_body, message_id, reference_ids, dedupe_key, routing_address, created_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ((i, i, "inbound", f"cust{i % CUSTOMERS}@customer.example", "[]", "[]", f"Existing case {i}",
              "Existing description.", f"<pre-{i}@customer.example>", "[]", f"{i:064x}", ROUTING, now) for i in ids),
        )
        con.executemany(
            "INSERT INTO case_message_ids (id, message_key, case_id, case_email_id) VALUES (?,?,?,?)",
            ((i, hashlib.sha256(f"<pre-{i}@customer.example>".encode()).hexdigest(), i, i) for i in ids),
        )
        con.commit()
    con.execute("UPDATE case_counter SET value = ? WHERE id = 1", (n,))
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("ANALYZE")
    con.commit()
    con.close()
    return time.monotonic() - started


def message(k: int, existing: int, rng: random.Random) -> tuple[str, bytes]:
    """(envelope sender, content): even k a new request, odd k a reply to an existing case."""
    date = "Thu, 26 Nov 2026 10:00:00 +0000"
    if k % 2 == 0 or existing == 0:
        sender = f"new{k}@newcustomer.example"
        head = (f"From: New Customer <{sender}>\r\nTo: {ROUTING}\r\nSubject: Bench request {k}\r\n"
                f"Date: {date}\r\nMessage-ID: <bench-{k}-{rng.random()}@newcustomer.example>\r\n")
    else:
        i = rng.randint(1, existing)
        sender = f"cust{i % CUSTOMERS}@customer.example"
        head = (f"From: Customer <{sender}>\r\nTo: {ROUTING}\r\nSubject: Re: Existing case {i}\r\n"
                f"Date: {date}\r\nMessage-ID: <bench-{k}-{rng.random()}@customer.example>\r\n"
                f"In-Reply-To: <pre-{i}@customer.example>\r\nReferences: <pre-{i}@customer.example>\r\n")
    body = "Hello,\r\n\r\n" + "the device shows error 42 again after the update.\r\n" * 20 + "\r\nThanks\r\n"
    return sender, (head + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode()


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return int(line[:3])


async def _session(port: int, todo: list[tuple[str, bytes]], deadline: float, counts: dict[str, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _reply(reader)
        writer.write(b"EHLO bench-client.test\r\n")
        await _reply(reader)
        while todo and time.monotonic() < deadline:
            sender, content = todo.pop()
            codes = []
            for cmd in (f"MAIL FROM:<{sender}>", f"RCPT TO:<{ROUTING}>", "DATA"):
                writer.write(cmd.encode() + b"\r\n")  # no pipelining, like smtp-source
                codes.append(await _reply(reader))
                if codes[-1] >= 400:
                    break
            if codes != [250, 250, 354]:
                counts["errors"] += 1
                if counts["errors"] <= 3:
                    say(f"  refused: {codes}")
                writer.write(b"RSET\r\n")
                await _reply(reader)
                continue
            writer.write(content.replace(b"\r\n.", b"\r\n..") + b".\r\n")
            code = await _reply(reader)
            if code == 250:
                counts["sent"] += 1
            else:
                counts["errors"] += 1
                if counts["errors"] <= 3:
                    say(f"  DATA refused: {code}")
        writer.write(b"QUIT\r\n")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(_reply(reader), 5)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _drive(port: int, msgs: list[tuple[str, bytes]], sessions: int, deadline: float) -> dict[str, int]:
    counts = {"sent": 0, "errors": 0}
    todo = list(reversed(msgs))
    results = await asyncio.gather(*(_session(port, todo, deadline, counts) for _ in range(sessions)),
                                   return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    counts["errors"] += len(failed)
    for r in failed[:3]:
        say(f"  session failed: {type(r).__name__}: {r}")
    return counts


def stored_emails(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(con.execute("SELECT count(*) FROM case_emails").fetchone()[0])
    finally:
        con.close()


def run_postfix(args: argparse.Namespace, work: Path, existing: int) -> float | None:
    """Postfix's accept rate (msg/s) for the same load: the same messages, senders and client.

    None (with the reason printed) when Postfix cannot run here."""
    try:
        pf = PostfixInstance(work / "postfix", load_test=True, myhostname="postfix-bench.test")
        pf.start()
    except PostfixUnavailable as e:
        say(f"[postfix] not run: {e}")
        return None
    try:
        rng = random.Random(existing)
        msgs = [message(k, existing, rng) for k in range(args.messages)]
        started = time.monotonic()
        counts = asyncio.run(_drive(pf.smtpd_port, msgs, args.sessions, started + args.load_timeout))
        elapsed = time.monotonic() - started
        rate = counts["sent"] / elapsed if elapsed > 0 else 0.0
        say(f"[postfix] accepted {counts['sent']}/{len(msgs)} in {elapsed:.2f}s = {rate:.1f}/s"
            f" (client errors {counts['errors']})")
        return rate if counts["errors"] == 0 else None
    finally:
        pf.close()


def run_size(existing: int, args: argparse.Namespace, work: Path, dns: DNSServer) -> Result:
    data = work / f"cases-{existing}"
    data.mkdir(parents=True)
    config = data / "mailcase.toml"
    config.write_text(
        f'[server]\nhostname = "mx.bench.test"\n[log]\nmaillog = "none"\nlevel = "WARNING"\n'
        f'[dns]\nnameservers = ["{dns.address}"]\ntimeout = 2.0\n'
        f"[cases]\nauthenticate = {'false' if args.no_auth else 'true'}\n"
    )
    _mailcase(data, config, "init")
    _mailcase(data, config, "routing", "add", ROUTING)
    say(f"[{existing:>9,} existing] filling the database ...")
    fill_s = fill(data / "mailcase.db", existing, args.fill_timeout)
    say(f"[{existing:>9,} existing] filled in {fill_s:.1f}s; starting mailcase serve")
    smtp, http = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
    log = open(data / "serve.log", "wb")  # closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailcase", "--config", str(config), "serve", "--data-dir", str(data),
         "--smtp-listen", f"127.0.0.1:{smtp}", "--http-listen", f"127.0.0.1:{http}"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_port("127.0.0.1", smtp, 120, proc)
        wait_port("127.0.0.1", http, 120, proc)
        rng = random.Random(existing)
        before = stored_emails(data / "mailcase.db")
        msgs = [message(k, existing, rng) for k in range(args.messages)]
        started = time.monotonic()
        deadline = started + args.load_timeout
        counts = asyncio.run(_drive(smtp, msgs, args.sessions, deadline))
        target = before + counts["sent"]
        stored = stored_emails(data / "mailcase.db")
        while stored < target and time.monotonic() < deadline:
            time.sleep(0.02)
            stored = stored_emails(data / "mailcase.db")
        elapsed = time.monotonic() - started
        result = Result(existing, counts["sent"], stored - before, elapsed, fill_s, counts["errors"])
        say(f"[{existing:>9,} existing] {result.stored}/{result.sent} emails on cases in {elapsed:.2f}s"
            f" = {result.rate:.1f}/s (client errors {result.errors})")
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,1000000", help="existing cases, small,large (default 10000,1000000)")
    p.add_argument("--quick", action="store_true", help="smoke run: sizes 1000,20000 and 400 messages")
    p.add_argument("-m", "--messages", type=int, default=2000, help="emails sent per size (default 2000)")
    p.add_argument("-s", "--sessions", type=int, default=20, help="concurrent SMTP senders (default 20)")
    p.add_argument("--no-auth", action="store_true", help="skip SPF/DKIM/DMARC ([cases] authenticate=false)")
    p.add_argument("--no-postfix", action="store_true", help="skip the paired Postfix accept run")
    p.add_argument("--load-timeout", type=float, default=600.0, help="seconds per load (default 600)")
    p.add_argument("--fill-timeout", type=float, default=1800.0, help="seconds to fill one database (1800)")
    p.add_argument("--workdir", type=Path, default=None, help="keep data here (default: a temp dir, removed)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.messages = "1000,20000", 400
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    if len(sizes) != 2:
        raise SystemExit("--sizes takes two numbers: small,large")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mailcase-bench-cases-"))
    work.mkdir(parents=True, exist_ok=True)
    load1 = os.getloadavg()[0]
    results: list[Result] = []
    postfix: float | None = None
    try:
        if not args.no_postfix:
            postfix = run_postfix(args, work, sizes[0])
        with DNSServer({}) as dns:
            for n in sizes:
                results.append(run_size(n, args, work, dns))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    small, large = results
    ratio = large.rate / small.rate if small.rate else 0.0
    ok = ratio >= 0.8 and all(r.stored == r.sent and r.errors == 0 for r in results)
    say("")
    say(f"{'existing cases':>16} {'emails/s':>10} {'stored/sent':>12} {'fill s':>8}")
    for r in results:
        say(f"{r.existing:>16,} {r.rate:>10.1f} {f'{r.stored}/{r.sent}':>12} {r.fill_seconds:>8.1f}")
    say(f"ratio {large.existing:,} / {small.existing:,}: {ratio:.2f} (target >= 0.80) {'ok' if ok else 'MISS'}")
    if postfix:
        say(f"Postfix accepts {postfix:.1f}/s with the same load; mailcase email -> case "
            f"{small.rate:.1f}/s = {small.rate / postfix:.2f}x at {small.existing:,}, "
            f"{large.rate:.1f}/s = {large.rate / postfix:.2f}x at {large.existing:,} (target >= 1.0x)")
    say(f"{args.messages} emails per size, {args.sessions} senders, half replies threading by In-Reply-To;"
        f" auth {'off' if args.no_auth else 'on'}; load average before: {load1:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
