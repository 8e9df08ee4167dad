#!/usr/bin/env python3
"""Inbound benchmark: how fast mailcase accepts mail, beside Postfix on the same machine.

Not a test: it starts `mailcase serve` and a private Postfix instance (tests/support/postfix.py,
discard mode: every accepted message is fsynced to Postfix's queue, then discarded), drives
both with the same client load back to back, and prints messages per second and the ratio
mailcase/Postfix, as a table at the end. See bench/README.md.

Loads (20 concurrent sessions, 2 KB bodies, N messages each):
  many      plain SMTP, many messages per connection    smtp-source -d
  one       plain SMTP, one message per connection      smtp-source
  tls       STARTTLS once per connection, then many     asyncio client below
  tls-one   STARTTLS for every message (optional)       asyncio client below

Every loop is bounded by a message count and a deadline (--load-timeout), and everything
started here is stopped at the end, on an exception and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.postfix import (  # noqa: E402
    PostfixInstance,
    free_port,
    postfix_available,
)

SMTP_SOURCE = Path("/usr/sbin/smtp-source")
RCPT = "bench@example.test"
SENDER = "sender@sender.test"
CLIENT_NAME = "bench-client.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Load:
    key: str
    title: str
    target: float | None  # mailcase/Postfix ratio to reach


LOADS = {
    "many": Load("many", "plain, many msgs per connection", 2.0),
    "one": Load("one", "plain, one msg per connection", 1.5),
    "tls": Load("tls", "STARTTLS once, many msgs per conn", 1.5),
    "tls-one": Load("tls-one", "STARTTLS, one msg per connection", None),
}


def say(*args: object) -> None:
    print(*args, flush=True)


# --------------------------------------------------------------------------- CPU accounting


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by `root` and every descendant, reaped ones included (a child's
    time moves into its parent's cutime/cstime when the parent reaps it)."""
    procs: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        procs[int(entry.name)] = (int(fields[1]), ticks)
    total, todo, seen = 0, [root], set()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in procs:
            continue
        seen.add(pid)
        total += procs[pid][1]
        todo.extend(children.get(pid, []))
    return total / CLK_TCK


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------- the servers


def wait_banner(port: int, deadline: float, alive: Callable[[], bool]) -> None:
    last: object = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("server exited before it answered on SMTP")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(5)
                banner = s.recv(512)
                if banner.startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
                last = banner
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"no SMTP greeting on 127.0.0.1:{port}: {last}")


def wait_port(port: int, deadline: float, alive: Callable[[], bool]) -> None:
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("server exited before it listened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


class Mailcase:
    name = "mailcase"

    def __init__(self, workdir: Path) -> None:
        self.data_dir = workdir / "mailcase"
        self.log_path = workdir / "mailcase-serve.log"
        self.port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
        # Both servers log every message to a file (Postfix through postlogd, see Postfix).
        self.env["MAILCASE_LOG__MAILLOG"] = str(workdir / "mailcase-maillog.log")
        self.env["PYTHONUNBUFFERED"] = "1"

    def cli(self, *args: str, timeout: float = 300) -> str:
        res = subprocess.run(
            [sys.executable, "-m", "mailcase", "--data-dir", str(self.data_dir), *args],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        if res.returncode != 0:
            raise RuntimeError(f"mailcase {' '.join(args)} failed ({res.returncode}):\n"
                               f"{res.stdout}{res.stderr}")
        return res.stdout

    def start(self) -> float:
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailcase", "serve", "--data-dir", str(self.data_dir),
                 "--smtp-listen", f"127.0.0.1:{self.port}",
                 "--http-listen", f"127.0.0.1:{self.http_port}"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us; we stop it with SIGTERM
            )
        deadline = t0 + 60
        try:
            wait_banner(self.port, deadline, self.alive)
            wait_port(self.http_port, deadline, self.alive)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"mailcase did not start: {exc}\n--- {self.log_path} ---\n"
                               f"{self.log_tail()}") from None
        took = time.monotonic() - t0
        self.cli("address", "add", RCPT)
        return took

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def cpu(self) -> float:
        assert self.proc is not None
        return tree_cpu(self.proc.pid)

    def count(self) -> int:
        """Messages stored (any state)."""
        return len(json.loads(self.cli("messages", "list", "--json", "--limit", "1000000")))

    def processed(self) -> int:
        """Messages the pipeline has processed, read straight from the database file (a CLI
        call costs a second of imports, too coarse to time the processing with)."""
        db = sqlite3.connect(f"file:{self.data_dir / 'mailcase.db'}?mode=ro", uri=True,
                             timeout=10)
        try:
            row = db.execute(
                "SELECT count(*) FROM inbound_messages WHERE state = 'processed'"
            ).fetchone()
            return int(row[0])
        finally:
            db.close()

    def settle(self, timeout: float) -> None:
        """Until the pipeline has taken up everything accepted (nothing left 'received')."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not json.loads(self.cli("messages", "list", "--json", "--state", "received",
                                       "--limit", "1")):
                return
            time.sleep(0.5)
        say(f"  (mailcase: messages still in state 'received' after {timeout:.0f}s)")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class Postfix:
    name = "Postfix"

    def __init__(self, workdir: Path) -> None:
        self.pf = PostfixInstance(workdir, load_test=True, smtpd_tls=True,
                                  myhostname="postfix-bench.test")
        self._log_offset = 0

    @property
    def port(self) -> int:
        return self.pf.smtpd_port

    def start(self) -> float:
        self.pf.start()
        assert self.pf.started_in is not None
        return self.pf.started_in

    def alive(self) -> bool:
        return self.pf.running

    def cpu(self) -> float:
        assert self.pf.master_pid is not None
        return tree_cpu(self.pf.master_pid)

    def count(self) -> int:
        """Messages to RCPT that the discard transport has logged as delivered."""
        needle = f": to=<{RCPT}>, relay=none,"
        with open(self.pf.maillog_path, errors="replace") as f:
            return sum(1 for line in f if needle in line and "status=sent" in line
                       and "postfix/discard[" in line)

    def processed(self) -> int:
        """Postfix's processing: the discard transport's deliveries."""
        return self.count()

    def settle(self, timeout: float) -> None:
        try:
            self.pf.wait_queue_empty(timeout)
        except TimeoutError as exc:
            say(f"  (Postfix: {exc})")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.pf.maillog().splitlines()[-n:])

    def stop(self) -> None:
        self.pf.close()


Server = Mailcase | Postfix


# --------------------------------------------------------------------------- the clients


@dataclass
class Outcome:
    sent: int = 0  # messages the server answered 250 to after DATA
    failed: int = 0  # sessions or messages that ended in an error
    seconds: float = 0.0
    client_cpu: float = 0.0
    errors: list[str] = field(default_factory=list)
    tls: str = ""  # protocol/cipher seen by the TLS client


def run_smtp_source(port: int, n: int, sessions: int, size: int, many: bool,
                    timeout: float) -> Outcome:
    # -c prints a running count of completed DATA commands: how many got their 250 if it
    # stops early (it gives up at the first reply it did not expect).
    cmd = [str(SMTP_SOURCE), "-c", "-s", str(sessions), "-l", str(size), "-m", str(n),
           "-f", SENDER, "-t", RCPT, "-M", CLIENT_NAME]
    if many:
        cmd.append("-d")  # don't disconnect after a message: send the next on the same session
    cmd.append(f"127.0.0.1:{port}")
    out = Outcome()
    cpu0, t0 = children_cpu(), time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        out.seconds = time.perf_counter() - t0
        out.failed = 1
        out.errors.append(f"smtp-source did not finish within {timeout:.0f}s")
        return out
    out.seconds = time.perf_counter() - t0
    out.client_cpu = children_cpu() - cpu0
    counts = [int(x) for x in res.stdout.replace("\r", "\n").split() if x.isdigit()]
    out.sent = max(counts, default=0)
    if res.returncode != 0:
        out.failed = 1
        out.errors.append(f"smtp-source exit {res.returncode}: {res.stderr.strip()[-500:]}")
    elif out.sent != n:
        out.failed = 1
        out.errors.append(f"smtp-source counted {out.sent} messages, not {n}")
    return out


def make_body(size: int) -> bytes:
    """`size` octets of body in lines like smtp-source's ("1XXXX...", 78 + CRLF)."""
    lines, total, i = [], 0, 0
    while total < size:
        i += 1
        line = (str(i) + "X" * 77)[: max(1, min(78, size - total - 2))]
        lines.append(line.encode() + b"\r\n")
        total += len(line) + 2
    return b"".join(lines)


class SMTPError(Exception):
    pass


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    lines = []
    for _ in range(100):  # bounded: no reply has more lines than that
        line = await reader.readline()
        if not line:
            raise SMTPError("connection closed by server")
        lines.append(line)
        if line[3:4] != b"-":
            return int(line[:3]), b"".join(lines)
    raise SMTPError("reply too long")


async def expect(reader: asyncio.StreamReader, code: int, what: str) -> bytes:
    got, text = await read_reply(reader)
    if got != code:
        raise SMTPError(f"{what}: expected {code}, got {text.decode(errors='replace').strip()}")
    return text


async def tls_session(port: int, ctx: ssl.SSLContext, claim: Callable[[], int | None],
                      many: bool, body: bytes, out: Outcome) -> None:
    """One client session: connect, EHLO, STARTTLS, EHLO, then messages while `claim()` hands
    out message numbers (one per connection when not `many`)."""
    while True:
        seq = claim()
        if seq is None:
            return
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
        try:
            await expect(reader, 220, "greeting")
            writer.write(f"EHLO {CLIENT_NAME}\r\n".encode())
            ehlo = await expect(reader, 250, "EHLO")
            if b"STARTTLS" not in ehlo.upper():
                raise SMTPError("STARTTLS not offered")
            writer.write(b"STARTTLS\r\n")
            await expect(reader, 220, "STARTTLS")
            await writer.start_tls(ctx)
            if not out.tls:
                sslobj = writer.get_extra_info("ssl_object")
                out.tls = f"{sslobj.version()} {sslobj.cipher()[0]}"
            writer.write(f"EHLO {CLIENT_NAME}\r\n".encode())
            await expect(reader, 250, "EHLO after STARTTLS")
            while seq is not None:
                writer.write(f"MAIL FROM:<{SENDER}>\r\n".encode())
                await expect(reader, 250, "MAIL")
                writer.write(f"RCPT TO:<{RCPT}>\r\n".encode())
                await expect(reader, 250, "RCPT")
                writer.write(b"DATA\r\n")
                await expect(reader, 354, "DATA")
                writer.write(
                    f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: bench {seq}\r\n"
                    f"Message-ID: <{seq}.{os.getpid()}@{CLIENT_NAME}>\r\n\r\n".encode()
                    + body + b".\r\n"
                )
                await expect(reader, 250, "end of DATA")
                out.sent += 1
                seq = claim() if many else None
            writer.write(b"QUIT\r\n")
            with contextlib.suppress(SMTPError, OSError, ssl.SSLError):
                await read_reply(reader)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


async def _tls_load(port: int, n: int, sessions: int, size: int, many: bool,
                    time_limit: float, out: Outcome) -> None:
    ctx = ssl.create_default_context()
    # Both servers present a self-signed P-256 certificate; checking it would cost the same
    # for both, and the figure is about the servers.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    body = make_body(size)
    counter = iter(range(n))

    def claim() -> int | None:
        return next(counter, None)

    async def guarded() -> None:
        try:
            await tls_session(port, ctx, claim, many, body, out)
        except (SMTPError, OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            out.failed += 1
            if len(out.errors) < 5:
                out.errors.append(f"{type(exc).__name__}: {exc}")

    try:
        async with asyncio.timeout(time_limit):
            await asyncio.gather(*(guarded() for _ in range(sessions)))
    except TimeoutError:
        out.errors.append(f"TLS load did not finish within {time_limit:.0f}s")
        out.failed += 1


def run_tls_client(port: int, n: int, sessions: int, size: int, many: bool,
                   timeout: float) -> Outcome:
    out = Outcome()
    cpu0, t0 = self_cpu(), time.perf_counter()
    asyncio.run(_tls_load(port, n, sessions, size, many, timeout, out))
    out.seconds = time.perf_counter() - t0
    out.client_cpu = self_cpu() - cpu0
    return out


# --------------------------------------------------------------------------- one measurement


@dataclass
class Result:
    load: Load
    server: str
    outcome: Outcome
    server_cpu: float  # processing included
    accepted: int | None  # counted on the server side after the load
    drain: float | None  # seconds from the end of the load until all was processed

    @property
    def rate(self) -> float:
        return self.outcome.sent / self.outcome.seconds if self.outcome.seconds else 0.0


def wait_processed(server: Server, target: int, timeout: float) -> float | None:
    """Seconds until `server` has processed `target` messages in all; None past `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server.processed() >= target:
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def drive(server: Server, load: Load, n: int, args: argparse.Namespace) -> Result:
    before = server.count()
    processed_before = server.processed()
    cpu0 = server.cpu()
    if load.key in ("many", "one"):
        out = run_smtp_source(server.port, n, args.sessions, args.size, load.key == "many",
                              args.load_timeout)
    else:
        out = run_tls_client(server.port, n, args.sessions, args.size, load.key == "tls",
                             args.load_timeout)
    # Processing after the 250 (mailcase: the pipeline; Postfix: queue manager and discard)
    # is timed from the end of the load and its CPU counted in: both run it in the background.
    drain = wait_processed(server, processed_before + out.sent, args.settle_timeout)
    server_cpu = server.cpu() - cpu0
    accepted = server.count() - before  # everything is processed (and moved) by now
    res = Result(load, server.name, out, server_cpu, accepted, drain)
    extra = f", TLS {out.tls}" if out.tls else ""
    drained = "not all processed" if drain is None else f"all processed {drain:.2f}s after"
    say(f"  {server.name:8} {load.key:8} {out.sent:6} sent in {out.seconds:7.2f}s = "
        f"{res.rate:8.1f} msg/s ({drained}); server CPU "
        f"{1000 * server_cpu / max(1, out.sent):.2f} ms/msg, "
        f"client CPU {1000 * out.client_cpu / max(1, out.sent):.2f} ms/msg; "
        f"accepted {accepted}{extra}")
    for e in out.errors:
        say(f"    error: {e}")
    if out.failed and not server.alive():
        say(f"    {server.name} is no longer running; its log ends with:\n{server.log_tail()}")
    return res


# --------------------------------------------------------------------------- report


@dataclass
class Summary:
    """All runs of one load against one server: the median rate, summed counts."""

    runs: list[Result]

    @property
    def rate(self) -> float:
        return statistics.median(r.rate for r in self.runs)

    @property
    def sent(self) -> int:
        return sum(r.outcome.sent for r in self.runs)

    @property
    def accepted(self) -> int:
        return sum(r.accepted or 0 for r in self.runs)

    @property
    def failed(self) -> bool:
        return any(r.outcome.failed for r in self.runs)

    @property
    def drain(self) -> str:
        """Median seconds from the end of the load until everything was processed."""
        if any(r.drain is None for r in self.runs):
            return "—"
        return f"{statistics.median(r.drain or 0.0 for r in self.runs):.1f}"

    def cpu_ms(self, client: bool = False) -> float:
        cpu = sum(r.outcome.client_cpu if client else r.server_cpu for r in self.runs)
        return 1000 * cpu / max(1, self.sent)


def table(results: list[Result], args: argparse.Namespace, loads: list[Load]) -> str:
    by: dict[tuple[str, str], Summary] = {}
    for r in results:
        by.setdefault((r.load.key, r.server), Summary([])).runs.append(r)
    med = " (median of runs)" if args.repeat > 1 else ""
    rows = [
        f"inbound benchmark — {args.messages} messages per load and run, {args.repeat} run(s), "
        f"{args.sessions} sessions, {args.size}-byte bodies, {os.cpu_count()} CPUs",
        f"msg/s{med} = messages answered 250 after DATA per second of client wall time; "
        "accepted = counted on the server afterwards; CPU includes processing after the 250; "
        "processed +s = seconds after the load until all was processed",
        "",
        f"{'load':34} {'mailcase':>9} {'Postfix':>9} {'ratio':>7} {'target':>7} {'':4} "
        f"{'mailcase acc/sent':>17} {'Postfix acc/sent':>16}  "
        f"{'CPU ms/msg mc/pf (client)':>26}  {'processed +s mc/pf':>18}",
    ]
    for load in loads:
        m, p = by.get((load.key, "mailcase")), by.get((load.key, "Postfix"))
        if m is None and p is None:
            continue
        mr = f"{m.rate:9.1f}" if m else f"{'—':>9}"
        pr = f"{p.rate:9.1f}" if p else f"{'—':>9}"
        ratio, verdict = f"{'—':>7}", ""
        if m and p and p.rate > 0:
            x = m.rate / p.rate
            ratio = f"{x:6.2f}×"
            if load.target is not None:
                verdict = "ok" if x >= load.target else "MISS"
        target = f"≥{load.target:.1f}×" if load.target is not None else "—"
        mc = f"{m.accepted}/{m.sent}{'!' if m.failed else ''}" if m else "—"
        pc = f"{p.accepted}/{p.sent}{'!' if p.failed else ''}" if p else "—"
        client = max(s.cpu_ms(client=True) for s in (m, p) if s is not None)
        cpu = (f"{f'{m.cpu_ms():.2f}' if m else '—'}/{f'{p.cpu_ms():.2f}' if p else '—'}"
               f" ({client:.2f})")
        drain = f"{m.drain if m else '—'}/{p.drain if p else '—'}"
        rows.append(f"{load.title:34} {mr} {pr} {ratio} {target:>7} {verdict:4} {mc:>17} "
                    f"{pc:>16}  {cpu:>26}  {drain:>18}")
    if any(r.outcome.failed for r in results):
        rows.append("! = the client saw errors (printed above with the run)")
    rows.append(f"load average before the run: {args.loadavg_before:.2f}"
                + (" — other work was using the CPUs: figures are low and noisy"
                   if args.loadavg_before > 1.0 else ""))
    return "\n".join(rows)


# --------------------------------------------------------------------------- main


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    # Ctrl-C must stop everything even when started with SIGINT ignored (a background job).
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--messages", type=int, default=5000,
                   help="messages per load and server (default 5000)")
    p.add_argument("--quick", action="store_true", help="smoke run: 500 messages per load")
    p.add_argument("-r", "--repeat", type=int, default=1,
                   help="runs of each load per server, alternating; the table shows the median")
    p.add_argument("-s", "--sessions", type=int, default=20, help="concurrent sessions (20)")
    p.add_argument("-l", "--size", type=int, default=2048, help="body octets per message (2048)")
    p.add_argument("--loads", default="many,one,tls,tls-one",
                   help=f"comma-separated, from {', '.join(LOADS)} (default: all)")
    p.add_argument("--servers", default="mailcase,postfix",
                   help="mailcase,postfix (default both); postfix alone checks the clients")
    p.add_argument("--warmup", type=int, default=200,
                   help="messages sent to each server before measuring (not counted)")
    p.add_argument("--load-timeout", type=float, default=300.0,
                   help="seconds one load may take before it is abandoned (300)")
    p.add_argument("--settle-timeout", type=float, default=120.0,
                   help="seconds to wait after a load for the server to finish processing")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where to put both servers' data (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    a = p.parse_args(argv)
    if a.quick:
        a.messages, a.warmup = 500, min(a.warmup, 50)
    a.messages = max(1, min(a.messages, 1_000_000))
    a.repeat = max(1, min(a.repeat, 20))
    for k in a.loads.split(","):
        if k not in LOADS:
            p.error(f"unknown load {k!r}")
    for s in a.servers.split(","):
        if s not in ("mailcase", "postfix"):
            p.error(f"unknown server {s!r}")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = postfix_available()
    if reason is not None or not SMTP_SOURCE.exists():
        say(f"cannot run: {reason or f'{SMTP_SOURCE} is missing (Debian package postfix)'}")
        return 2
    loads = [LOADS[k] for k in args.loads.split(",")]
    args.loadavg_before = os.getloadavg()[0]
    if args.loadavg_before > 1.0:
        say(f"warning: load average {args.loadavg_before:.2f} before starting: something else "
            "is using the CPUs, the figures will be low and noisy")
    wanted = args.servers.split(",")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mailcase-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    say(f"work directory {workdir}")
    servers: list[Server] = []
    results: list[Result] = []
    rc = 0
    try:
        with sigterm_as_interrupt():
            if "mailcase" in wanted:
                mc = Mailcase(workdir)
                servers.append(mc)
                try:
                    say(f"mailcase started in {mc.start():.2f}s on 127.0.0.1:{mc.port}")
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    say(f"mailcase: {exc}")
                    servers.remove(mc)
                    mc.stop()
                    rc = 1
            if "postfix" in wanted:
                pf = Postfix(workdir)
                servers.append(pf)
                say(f"Postfix started in {pf.start():.2f}s on 127.0.0.1:{pf.port} "
                    f"(log {pf.pf.maillog_path})")
            for server in servers:
                if args.warmup:
                    out = run_smtp_source(server.port, args.warmup, args.sessions, args.size,
                                          True, args.load_timeout)
                    server.settle(args.settle_timeout)
                    say(f"  {server.name} warm-up: {out.sent}/{args.warmup} "
                        f"{'; '.join(out.errors)}")
            for load in loads:
                say(f"load {load.key}: {load.title}")
                for i in range(args.repeat):
                    # Alternate who goes first, so neither always runs on a warmer machine.
                    for server in servers if i % 2 == 0 else servers[::-1]:
                        if server.alive():
                            results.append(drive(server, load, args.messages, args))
    except KeyboardInterrupt:
        say("interrupted")
        rc = 130
    finally:
        for server in reversed(servers):
            with contextlib.suppress(Exception):
                server.stop()
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            say(f"kept {workdir}")
    if results:
        say("")
        say(table(results, args, loads))
    for r in results:
        if r.outcome.failed or (r.accepted is not None and r.accepted != r.outcome.sent):
            rc = rc or 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
