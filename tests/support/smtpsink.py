"""Postfix's `smtp-sink` as a receiving server for delivery tests and the benchmark.

smtp-sink accepts every message and throws it away (or, with ``dump=True``, writes each
transaction to a file of its own, which lets a test count deliveries per Message-ID and so
find duplicates). It runs as ``nobody`` when started as root, so the dump directory lives
under the system temp dir with a traversable path (pytest's tmp dirs are 0700).

    with SmtpSink(dump=True) as sink:       # 127.0.0.1:sink.port
        ...
        assert sink.message_ids() == Counter({"<a@x>": 1})
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import TracebackType

__all__ = ["SMTP_SINK", "SmtpSink", "smtp_sink_available"]

SMTP_SINK = Path("/usr/sbin/smtp-sink")
_MSGID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


def smtp_sink_available() -> str | None:
    """None if smtp-sink can run here, else why not (for pytest.skip)."""
    if not SMTP_SINK.exists():
        return f"{SMTP_SINK} is missing (Debian package postfix)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpSink:
    """One smtp-sink process on 127.0.0.1; a context manager."""

    def __init__(self, *, dump: bool = False, backlog: int = 256, extra: tuple[str, ...] = (),
                 hostname: str = "sink.test") -> None:
        self.port = _free_port()
        self.dump = dump
        self.backlog = backlog
        self.extra = extra
        self.hostname = hostname
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SmtpSink:
        cmd = [str(SMTP_SINK), "-h", self.hostname, "-m", "1000"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        if self.dump:
            self.dir = Path(tempfile.mkdtemp(prefix="mailcase-sink-"))
            self.dir.chmod(0o777)
            cmd += ["-d", f"{self.dir}/%H%M%S."]
        cmd += [*self.extra, f"127.0.0.1:{self.port}", str(self.backlog)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"smtp-sink exited: {err}")
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.5
            ):
                return self
            time.sleep(0.02)
        raise TimeoutError("smtp-sink did not start listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None

    def close(self) -> None:
        self.stop()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def files(self) -> list[Path]:
        assert self.dir is not None, "start with dump=True"
        return [p for p in self.dir.rglob("*") if p.is_file()]

    def message_ids(self) -> Counter[str]:
        """How many times each Message-ID arrived (dump mode)."""
        counts: Counter[str] = Counter()
        for p in self.files():
            m = _MSGID.search(p.read_bytes())
            counts[m.group(1).decode() if m else "(none)"] += 1
        return counts

    def transactions(self) -> list[bytes]:
        """Each dumped transaction's bytes (X-Mail-Args, X-Rcpt-Args, headers, body)."""
        return [p.read_bytes() for p in self.files()]
