"""Start a real `mailcase serve` process for a test, on free loopback ports.

Tests talk to it the way a user would: over SMTP and HTTP, and through the `mailcase` CLI.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support import forkserver

MAILCASE = [sys.executable, "-m", "mailcase"]

# How long a running server may take to see a receiving address another process changed
# (src/mailcase/inbound/addressbook.py): a new address is loaded at the first RCPT that misses
# it (no wait); any other change (remove, set, disable) waits for the background poll of the
# settings generation, once a second.
_ADDRESS_CHANGED_SETTLE = 1.5
_ADDRESS_GROUPS = ("address", "routing")
_READ_ONLY = ("list", "show", "--help")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_port_free(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                return
            except OSError:
                time.sleep(0.1)


def wait_port(host: str, port: int, timeout: float = 30.0,
              proc: subprocess.Popen[bytes] | forkserver.ForkedProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


@dataclass
class Platform:
    """A running mailcase instance and the ways to reach it."""

    data_dir: Path
    smtp_port: int
    http_port: int
    env: dict[str, str]
    log_path: Path
    config_path: Path | None = None
    proc: subprocess.Popen[bytes] | forkserver.ForkedProcess | None = None
    token: str | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def smtp(self) -> tuple[str, int]:
        return ("127.0.0.1", self.smtp_port)

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd: list[str] = []
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        cmd += ["--data-dir", str(self.data_dir), *args]
        res = forkserver.run(cmd, env=self.env, input=input, timeout=120)
        if check and res.returncode != 0:
            raise AssertionError(f"mailcase {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        if (self.proc is not None and res.returncode == 0 and len(args) >= 2
                and args[0] in _ADDRESS_GROUPS and args[1] not in _READ_ONLY):
            # The CLI used to take longer than the poll interval to start, which hid it; a
            # test that sends right after changing an address relies on the server having
            # seen the change, as a user who waits a moment would. An added address needs no
            # wait: the first RCPT that misses it loads it.
            if args[1] != "add":
                time.sleep(_ADDRESS_CHANGED_SETTLE)
        return res

    def start(self, timeout: float = 60.0) -> None:
        cmd: list[str] = []
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        cmd += [
            "serve", "--data-dir", str(self.data_dir),
            "--smtp-listen", f"127.0.0.1:{self.smtp_port}",
            "--http-listen", f"127.0.0.1:{self.http_port}", *self.extra_args,
        ]
        self.proc = forkserver.popen(cmd, env=self.env, stdout_path=self.log_path)
        wait_port("127.0.0.1", self.smtp_port, timeout, self.proc)
        wait_port("127.0.0.1", self.http_port, timeout, self.proc)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # Killed, the acceptor processes die of the parent's death (PR_SET_PDEATHSIG), but
        # after it: a start right now could find them still holding the port.
        _wait_port_free("127.0.0.1", self.smtp_port, 10.0)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def api(self) -> httpx.Client:
        if self.token is None:
            self.token = self.cli("token", "create", f"test-{time.monotonic_ns()}").stdout.strip()
        return httpx.Client(base_url=self.http_base, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_platform(
    tmp: Path,
    *,
    config: str | None = None,
    env: dict[str, str] | None = None,
    start: bool = True,
) -> Iterator[Platform]:
    tmp.mkdir(parents=True, exist_ok=True)
    data_dir = tmp / "data"
    e = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
    e["PYTHONUNBUFFERED"] = "1"
    e.update(env or {})
    cfg_path = None
    if config is not None:
        cfg_path = tmp / "mailcase.toml"
        cfg_path.write_text(config)
    p = Platform(data_dir=data_dir, smtp_port=free_port(), http_port=free_port(), env=e,
                 log_path=tmp / "serve.log", config_path=cfg_path)
    try:
        if start:
            p.start()
        yield p
    finally:
        p.stop()
