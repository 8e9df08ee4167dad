#!/usr/bin/env python3
"""maillog micro-benchmark: the cost of writing one line on the accept path.

Not a test. Every accepted message writes a `connect` and an `accepted` line, so formatting
and escaping a line is on the hot path. This times, in one process, N calls of each of:

- `accepted` with ordinary values (what almost every message logs),
- `rejected` with ordinary values,
- `accepted` with hostile values (quotes, ", ", "=", newlines, non-ASCII, control chars),

writing to /dev/null through the real sink (buffered, flushed by its thread), best of R runs.
It prints the calling thread's CPU µs per call last. There is no Postfix figure: Postfix formats its lines in C.

    .venv/bin/python bench/maillog.py            # 200 000 calls per case, best of 5
    .venv/bin/python bench/maillog.py -n 20000 -r 3
    .venv/bin/python bench/maillog.py --against /tmp/old   # e.g. `git archive HEAD~ src`
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import importlib.util
from types import ModuleType

from mailcase import maillog  # after the path is set

HOSTILE_FROM = '"x>, status=sent (delivered to admin), to=<ceo"@x.test'


def _accepted_ordinary(m: ModuleType) -> None:
    m.accepted(
        "69513F2A01A3B4C5", client_ip="192.0.2.10", helo="mx.sender.example",
        mail_from="alice@sender.example", rcpt_to=["support@example.test"], size=2048,
        tls="TLSv1.3:TLS_AES_256_GCM_SHA384", message_id="<20261204.abc123@sender.example>",
    )


def _rejected_ordinary(m: ModuleType) -> None:
    m.rejected(
        stage="RCPT", client_ip="192.0.2.10", helo="mx.sender.example",
        mail_from="alice@sender.example", rcpt_to=["nobody@example.test"],
        reply="550 5.1.1 Recipient address rejected: user unknown", reason="unknown recipient",
    )


def _accepted_hostile(m: ModuleType) -> None:
    m.accepted(
        "69513F2A01A3B4C5", client_ip="192.0.2.10", helo="evil\r\nQ: status=sent\x00",
        mail_from=HOSTILE_FROM, rcpt_to=["jörg@example.test", "a\u2028b@x.test"], size=2048,
        tls="plaintext", message_id='"<m@x>", x=1',
    )


CASES: list[tuple[str, Callable[[ModuleType], None]]] = [
    ("accepted, ordinary values", _accepted_ordinary),
    ("rejected, ordinary values", _rejected_ordinary),
    ("accepted, hostile values", _accepted_hostile),
]


def _time(m: ModuleType, fn: Callable[[ModuleType], None], n: int) -> float:
    """CPU time of this thread per call: the sink's flusher thread (the same for any line
    format) and other processes on a busy machine are left out."""
    start = time.thread_time()
    for _ in range(n):
        fn(m)
    return (time.thread_time() - start) / n


def _load(tree: Path) -> ModuleType:
    """Another checkout's maillog module (e.g. the commit before a change), side by side."""
    spec = importlib.util.spec_from_file_location(
        "maillog_against", tree / "src" / "mailcase" / "maillog.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200_000, help="calls per case and run")
    ap.add_argument("-r", type=int, default=5, help="runs per case (best is shown)")
    ap.add_argument("--against", type=Path, metavar="TREE",
                    help="also time TREE/src/mailcase/maillog.py, runs interleaved")
    args = ap.parse_args()
    modules = {"this": maillog}
    if args.against is not None:
        modules["against"] = _load(args.against)
    for m in modules.values():
        m.configure("/dev/null")
    try:
        results = []
        for name, fn in CASES:
            best = dict.fromkeys(modules, float("inf"))
            for m in modules.values():
                _time(m, fn, min(args.n, 10_000))  # warm up
            for _ in range(args.r):
                for key, m in modules.items():
                    best[key] = min(best[key], _time(m, fn, args.n))
            results.append((name, best))
            print(name, " ".join(f"{k}: {v * 1e6:.2f} µs/call" for k, v in best.items()),
                  flush=True)
    finally:
        for m in modules.values():
            m.configure("none")
    print()
    print(f"{'case':32} {'µs/call':>8}" + (f" {'against':>8} {'ratio':>6}" if
                                            args.against else ""))
    for name, best in results:
        line = f"{name:32} {best['this'] * 1e6:8.2f}"
        if "against" in best:
            line += f" {best['against'] * 1e6:8.2f} {best['this'] / best['against']:5.2f}×"
        print(line)


if __name__ == "__main__":
    main()
