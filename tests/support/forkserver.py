"""Run `python -m mailcase ...` as separate processes forked from one pre-imported interpreter.

Why: every `mailcase` CLI call and every `mailcase serve` a test starts used to be a fresh
interpreter that spent about 1.5 s of CPU importing the same modules (SQLAlchemy, alembic,
pydantic, FastAPI, ...); the integration tests make a few hundred such calls. A small server
process ("zygote") imports those modules once; for each command it forks a child that sets
the caller's environment, working directory and standard streams and then runs
`python -m mailcase` the usual way (``runpy.run_module("mailcase", run_name="__main__")``),
ending through the normal interpreter exit (atexit handlers, non-daemon threads, flushing).

The child is still a process of its own with its own pid, signals, exit status and database
connections: the tests talk to it exactly as before. What the child shares with the zygote is
only the already-imported code (the random module reseeds after fork; tokens and ids come from
os.urandom). Set TESTS_PLAIN_SUBPROCESS=1 to run every command as a fresh interpreter instead.

The zygote is the fork parent, so it also reaps its children: `ForkedProcess` offers the part
of `subprocess.Popen` the tests use (pid, poll, wait, send_signal, kill, terminate,
returncode), asking the zygote for the exit status (waitpid(WNOHANG)), so a pid is reaped only
once the test has looked, as with Popen.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ForkedProcess", "popen", "run", "run_binary"]

# Modules the zygote imports before forking: everything `mailcase serve` and the CLI commands
# load. Importing them has no side effects beyond what a normal start does anyway.
_PRELOAD = ("mailcase.cli", "mailcase.serve", "mailcase.storage.addresses",
            "mailcase.storage.emaillog", "mailcase.storage.messages", "mailcase.storage.tokens",
            "mailcase.schema", "mailcase.platform")

_ZYGOTE = r'''
import gc, json, os, runpy, socket, sys, threading
for name in json.loads(sys.argv[2]):
    __import__(name)
if threading.active_count() != 1:
    raise SystemExit("imports started a thread: forking would not be safe")
# The imported objects live as long as the zygote: keep the children's collector off them
# (it would write to every page they share with the zygote).
gc.disable()
gc.freeze()
sock = socket.socket(fileno=int(sys.argv[1]))
rfile = sock.makefile("rb")

def serve():
    """Answer requests until EOF; in a forked child, return its request instead."""
    for line in rfile:
        req = json.loads(line)
        if req["op"] == "spawn":
            pid = os.fork()
            if pid == 0:
                return req
            reply = {"pid": pid}
        elif req["op"] == "poll":
            try:
                done, status = os.waitpid(req["pid"], os.WNOHANG)
            except ChildProcessError:
                reply = {"rc": None, "error": "no such child"}
            else:
                reply = {"rc": os.waitstatus_to_exitcode(status) if done else None}
        else:
            reply = {"error": "unknown op"}
        sock.sendall(json.dumps(reply).encode() + b"\n")
    raise SystemExit(0)

req = serve()
rfile.close()
sock.close()
os.chdir(req["cwd"])
os.environ.clear()
os.environ.update(req["env"])
fd = os.open(req["stdin"] or os.devnull, os.O_RDONLY)
os.dup2(fd, 0)
os.close(fd)
flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if req["append"] else os.O_TRUNC)
fd = os.open(req["stdout"], flags, 0o644)
os.dup2(fd, 1)
os.close(fd)
if req["stderr"] is None:
    os.dup2(1, 2)
else:
    fd = os.open(req["stderr"], flags, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
# Standard streams as a fresh interpreter with this environment would make them.
import io
unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
for fd, name in ((1, "stdout"), (2, "stderr")):
    old = getattr(sys, name)
    raw = io.FileIO(fd, "w", closefd=False)
    stream = io.TextIOWrapper(raw if unbuffered else io.BufferedWriter(raw),
                              encoding=old.encoding, errors=old.errors,
                              line_buffering=name == "stderr" and not unbuffered,
                              write_through=unbuffered)
    setattr(sys, name, stream)
    setattr(sys, "__" + name + "__", stream)
sys.argv = ["mailcase", *req["args"]]
del serve, req, rfile, sock, fd, flags, io, unbuffered, old, raw, stream, name
gc.enable()
code = 0
try:
    runpy.run_module("mailcase", run_name="__main__", alter_sys=True)
except SystemExit as e:
    if e.code is None:
        code = 0
    elif isinstance(e.code, int):
        code = e.code
    else:
        print(e.code, file=sys.stderr)
        code = 1
except BaseException:
    sys.excepthook(*sys.exc_info())
    code = 1
# The interpreter's exit up to the point where it would tear down the modules: join
# non-daemon threads, run atexit handlers (logging, multiprocessing), flush the streams. The
# teardown itself would only write to every inherited object (copy-on-write: 0.5 s or more).
threading._shutdown()
import atexit
atexit._run_exitfuncs()
for stream in (sys.stdout, sys.stderr):
    try:
        stream.flush()
    except Exception:
        pass
os._exit(code & 0xFF)
'''


def _plain() -> bool:
    return os.environ.get("TESTS_PLAIN_SUBPROCESS", "") not in ("", "0")


class _Zygote:
    def __init__(self) -> None:
        parent, child = socket.socketpair()
        self._sock = parent
        self._rfile = parent.makefile("rb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
        self._errors = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE, str(child.fileno()), json.dumps(_PRELOAD)],
            pass_fds=[child.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._errors, env=env,
        )
        child.close()
        self._lock = threading.Lock()

    def request(self, req: Mapping[str, object]) -> dict[str, object]:
        with self._lock:
            self._sock.sendall(json.dumps(req).encode() + b"\n")
            line = self._rfile.readline()
        if not line:
            self._errors.seek(0)
            raise RuntimeError(f"the mailcase fork server exited ({self.proc.wait(10)}): "
                               f"{self._errors.read().decode(errors='replace')}")
        reply: dict[str, object] = json.loads(line)
        return reply

    def close(self) -> None:
        self._sock.close()
        self._rfile.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._errors.close()


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()


def _get_zygote() -> _Zygote:
    global _zygote  # noqa: PLW0603 - one zygote per test process
    with _zygote_lock:
        if _zygote is None or _zygote.proc.poll() is not None:
            _zygote = _Zygote()
            atexit.register(_zygote.close)
        return _zygote


class ForkedProcess:
    """The subset of `subprocess.Popen` the tests use, for a child of the fork server."""

    def __init__(self, zygote: _Zygote, pid: int, args: Sequence[str]) -> None:
        self._zygote = zygote
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            reply = self._zygote.request({"op": "poll", "pid": self.pid})
            if "error" in reply:
                raise RuntimeError(f"fork server: {reply['error']} (pid {self.pid})")
            rc = reply["rc"]
            if rc is not None:
                assert isinstance(rc, int)
                self.returncode = rc
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while (rc := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return rc

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # not reaped yet: the pid is still ours
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def popen(
    args: Sequence[str], *, env: Mapping[str, str], stdout_path: Path, append: bool = True,
    cwd: Path | None = None,
) -> ForkedProcess | subprocess.Popen[bytes]:
    """Start `python -m mailcase *args` with stdout and stderr going to `stdout_path`."""
    if _plain():
        with open(stdout_path, "ab" if append else "wb") as log:
            return subprocess.Popen([sys.executable, "-m", "mailcase", *args], env=dict(env),
                                    stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    zygote = _get_zygote()
    reply = zygote.request({
        "op": "spawn", "args": list(args), "env": dict(env), "cwd": str(cwd or os.getcwd()),
        "stdin": None, "stdout": str(stdout_path), "stderr": None, "append": append,
    })
    pid = reply["pid"]
    assert isinstance(pid, int)
    return ForkedProcess(zygote, pid, args)


def _decode(data: bytes) -> str:
    """As subprocess.run(text=True) does: locale encoding, universal newlines."""
    return io.TextIOWrapper(io.BytesIO(data)).read()


def run(
    args: Sequence[str], *, env: Mapping[str, str], input: str | None = None,
    timeout: float = 120, cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Like ``subprocess.run([python, -m, mailcase, *args], capture_output=True, text=True)``."""
    res = run_binary(args, env=env, input=None if input is None else input.encode(),
                     timeout=timeout, cwd=cwd)
    return subprocess.CompletedProcess(res.args, res.returncode, _decode(res.stdout),
                                       _decode(res.stderr))


def run_binary(
    args: Sequence[str], *, env: Mapping[str, str], input: bytes | None = None,
    timeout: float = 120, cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Like ``subprocess.run([python, -m, mailcase, *args], capture_output=True)``."""
    cmd = [sys.executable, "-m", "mailcase", *args]
    if _plain():
        return subprocess.run(cmd, env=dict(env), capture_output=True, input=input,
                              timeout=timeout, cwd=cwd)
    with tempfile.TemporaryDirectory(prefix="mailcase-cli-") as d:
        out, err, inp = Path(d) / "out", Path(d) / "err", Path(d) / "in"
        if input is not None:
            inp.write_bytes(input)
        zygote = _get_zygote()
        reply = zygote.request({
            "op": "spawn", "args": list(args), "env": dict(env),
            "cwd": str(cwd or os.getcwd()), "stdin": str(inp) if input is not None else None,
            "stdout": str(out), "stderr": str(err), "append": False,
        })
        pid = reply["pid"]
        assert isinstance(pid, int)
        proc = ForkedProcess(zygote, pid, cmd)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        return subprocess.CompletedProcess(cmd, rc, out.read_bytes(), err.read_bytes())
