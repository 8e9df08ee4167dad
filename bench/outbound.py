#!/usr/bin/env python3
"""Outbound benchmark: how fast mailcase delivers queued mail, beside Postfix, in one run.

Not a test. For each load the same N messages are delivered by mailcase's delivery engine and
by a private Postfix instance (tests/support/postfix.py, relay mode) to the same receiver on
loopback; the figure is messages per second from "go" to the last delivery recorded, and the
ratio mailcase/Postfix is printed last (target ≥ 1.0). See bench/README.md.

Loads:
  plain      plaintext SMTP to Postfix's smtp-sink (no TLS in smtp-sink)
  starttls   STARTTLS to a receiving Postfix in discard mode (smtp-sink cannot do TLS);
             mailcase tls_mode "required", Postfix smtp_tls_security_level "encrypt"

How "go" is arranged so that only delivery is timed:
  mailcase: the N messages are enqueued into a fresh SQLite database first; the clock runs
            from starting `DeliveryEngine.run()` until every message is recorded delivered.
  Postfix:  the N messages are submitted over SMTP with a header_checks HOLD, so they wait in
            the hold queue; the clock runs from `postsuper -H ALL` (release) until the log has
            N "status=sent" lines.
Both use at most 20 connections to the destination (mailcase max_per_destination, Postfix's
default_destination_concurrency_limit) and keep connections open for more mail (mailcase
messages_per_connection, Postfix's connection cache; Postfix does not reuse TLS connections by
default, smtp_tls_connection_reuse = no, and that default is what is measured).

Every wait is bounded (--timeout); everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import smtplib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from sqlalchemy import func, select  # noqa: E402
from tests.support.dnsserver import DNSServer  # noqa: E402
from tests.support.postfix import PostfixInstance, postfix_available  # noqa: E402
from tests.support.smtpsink import SmtpSink, smtp_sink_available  # noqa: E402

from mailcase.config import Settings  # noqa: E402
from mailcase.delivery.engine import DeliveryEngine  # noqa: E402
from mailcase.outbound.models import outbound_messages  # noqa: E402
from mailcase.outbound.queue import enqueue as queue_enqueue  # noqa: E402
from mailcase.platform import build_outbound  # noqa: E402
from mailcase.storage.db import begin_write, make_engine, upgrade  # noqa: E402

POSTSUPER = "/usr/sbin/postsuper"


@dataclass
class Figure:
    load: str
    who: str
    n: int
    delivered: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


def message(i: int, size: int) -> bytes:
    head = (f"From: bench@sender.test\r\nTo: rcpt@bench.test\r\nSubject: bench {i}\r\n"
            f"Message-ID: <bench-{i}-{os.getpid()}@sender.test>\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"
    body = (line * (size // len(line) + 1))[:size]
    return head + body + b"\r\n"


# ------------------------------------------------------------------------------- mailcase


def run_mailcase(load: str, n: int, size: int, port: int, dns: DNSServer, timeout: float,
                 ) -> Figure:
    tmp = Path(tempfile.mkdtemp(prefix="mailcase-bench-out-"))
    url = f"sqlite:///{tmp / 'mailcase.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with begin_write(engine) as conn:
        for i in range(n):
            queue_enqueue.enqueue(conn, mail_from="bench@sender.test", rcpt_to=["rcpt@bench.test"],
                                  content=message(i, size))
    settings = Settings(
        data_dir=tmp,
        dns={"nameservers": [dns.address], "timeout": 2.0},
        server={"hostname": "mailcase.bench"},
        delivery={"mx_port": port, "tls_mode": "required" if load == "starttls" else "off",
                  "max_per_destination": 20, "poll_interval": 0.05},
        dkim={"verp": False, "sign": False},
    )

    def delivered() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(
                outbound_messages.c.state == "delivered")).scalar_one())

    async def go() -> float:
        eng = DeliveryEngine(settings, engine, hooks=build_outbound(settings).delivery)
        t0 = time.perf_counter()
        task = asyncio.create_task(eng.run())
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if task.done():
                    task.result()
                if eng.recorded >= n and not eng.busy:
                    break
                await asyncio.sleep(0.01)
            return time.perf_counter() - t0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    seconds = asyncio.run(go())
    got = delivered()
    engine.dispose()
    return Figure(load, "mailcase", n, got, seconds)


# ------------------------------------------------------------------------------- Postfix


def _submit(pf: PostfixInstance, n: int, size: int) -> None:
    def one(chunk: range) -> None:
        with smtplib.SMTP(*pf.address, timeout=60) as s:
            for i in chunk:
                s.sendmail("bench@sender.test", ["rcpt@bench.test"], message(i, size))

    step = (n + 9) // 10
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(one, [range(a, min(a + step, n)) for a in range(0, n, step)]))


def run_postfix(load: str, n: int, size: int, port: int, timeout: float, tmp: Path) -> Figure:
    checks = tmp / f"header_checks-{load}"
    checks.write_text("/^Subject: bench /  HOLD\n")
    checks.chmod(0o644)
    settings = {"header_checks": f"regexp:{checks}"}
    level = "encrypt" if load == "starttls" else "none"
    with PostfixInstance(tmp, relay_port=port, smtp_tls_security_level=level, load_test=True,
                         myhostname="postfix.bench", settings=settings) as pf:
        _submit(pf, n, size)
        deadline = time.monotonic() + timeout
        while pf.queue_size() < n and time.monotonic() < deadline:
            time.sleep(0.05)
        log = pf.maillog_path
        t0 = time.perf_counter()
        pf._run(POSTSUPER, "-c", pf.config_directory, "-H", "ALL")  # release: go
        sent = 0
        while time.monotonic() < deadline:
            sent = log.read_text(errors="replace").count("status=sent")
            if sent >= n:
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - t0
    return Figure(load, "Postfix", n, sent, seconds)


# ------------------------------------------------------------------------------- receivers


@contextlib.contextmanager
def receiver(load: str, tmp: Path) -> Iterator[int]:
    if load == "plain":
        with SmtpSink(backlog=512) as sink:
            yield sink.port
    else:
        with PostfixInstance(tmp, smtpd_tls=True, load_test=True,
                             myhostname="mx.bench.test") as pf:
            yield pf.smtpd_port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--messages", type=int, default=2000)
    ap.add_argument("-l", "--size", type=int, default=2048, help="body octets")
    ap.add_argument("--loads", default="plain,starttls")
    ap.add_argument("-r", "--runs", type=int, default=1, help="runs per load (alternating)")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    for why in (postfix_available(), smtp_sink_available()):
        if why:
            print(f"cannot run: {why}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="mailcase-bench-"))
    tmp.chmod(0o755)
    zone = {"bench.test": {"MX": [(10, "mx.bench.test")]},
            "mx.bench.test": {"A": ["127.0.0.1"]}}
    figures: list[Figure] = []
    with DNSServer(zone) as dns:
        for load in args.loads.split(","):
            with receiver(load, tmp) as port:
                for r in range(args.runs):
                    order = ["mailcase", "Postfix"] if r % 2 == 0 else ["Postfix", "mailcase"]
                    for who in order:
                        if who == "mailcase":
                            f = run_mailcase(load, args.messages, args.size, port, dns,
                                             args.timeout)
                        else:
                            f = run_postfix(load, args.messages, args.size, port,
                                            args.timeout, tmp)
                        figures.append(f)
                        print(f"  {load:9} {who:9} {f.delivered}/{f.n} in {f.seconds:6.2f} s"
                              f" = {f.rate:8.1f} msg/s", flush=True)
    print()
    print(f"{'load':10} {'mailcase msg/s':>15} {'Postfix msg/s':>14} {'ratio':>7} "
          f"{'target':>7}")
    for load in args.loads.split(","):
        m = statistics.median(f.rate for f in figures if f.load == load and f.who == "mailcase")
        p = statistics.median(f.rate for f in figures if f.load == load and f.who == "Postfix")
        ratio = m / p if p else float("inf")
        flag = "" if ratio >= 1.0 else "MISS"
        print(f"{load:10} {m:15.1f} {p:14.1f} {ratio:6.2f}× {'≥1.0×':>7} {flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
