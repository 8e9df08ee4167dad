"""Issue 11 item 1(b, c): the parent–acceptor channel survives large messages and would-block
I/O, and a broken channel does not restart an acceptor that is serving.

Before: `multiprocessing.Connection.send` on the descriptor uvloop had made non-blocking
raised `BlockingIOError` half-way through a large metrics snapshot, and the parent treated any
`OSError` on the pipe as a dead child and restarted it, aborting its transfers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import pickle
import random
import signal
import smtplib
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from mailcase import eventloop
from mailcase.inbound.channel import MAX_FRAME, Channel, ChannelError
from tests.integration.test_acceptors import _children
from tests.support.platform import running_platform

LOOPS = ["asyncio", "uvloop"]


def _run(kind: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    eventloop.run(main(), kind)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", LOOPS)
def test_a_large_message_arrives_whole_through_a_non_blocking_socket(kind: str) -> None:
    """A 24 MB message (about a hundred times the socket buffer) written while the reader is
    paused: the send never blocks or raises, and the message arrives whole, in order with
    the small ones around it."""
    big = random.randbytes(24 * 1024 * 1024)

    async def main() -> None:
        a_sock, b_sock = socket.socketpair()
        got: list[tuple[Any, ...]] = []
        done = asyncio.Event()

        def on_message(msg: tuple[Any, ...]) -> None:
            got.append(msg)
            if msg[0] == "last":
                done.set()

        a = await Channel.open(a_sock, lambda m: None, lambda e: None, name="a")
        b = await Channel.open(b_sock, on_message, lambda e: None, name="b")
        assert not a_sock.getblocking() and not b_sock.getblocking()
        b._transport.pause_reading()  # type: ignore[union-attr]  # the parent is busy
        assert a.send("wake")
        assert a.send("metrics", big)
        assert a.send("last", 3)
        await asyncio.sleep(0.05)
        assert a.pending > 0  # the socket did not take it all: buffered, not an error
        b._transport.resume_reading()  # type: ignore[union-attr]
        await eventloop.wait_for(done.wait(), 60)
        assert [m[0] for m in got] == ["wake", "metrics", "last"]
        assert got[1][1] == big and got[2] == ("last", 3)
        assert a.pending == 0
        await a.aclose()
        await b.aclose()

    _run(kind, main)


def test_frames_split_anywhere_are_reassembled() -> None:
    messages = [("wake",), ("metrics", list(range(5000))), ("ready", 1), ("x", "é" * 70000)]
    stream = b"".join(
        len(p).to_bytes(4, "big") + p
        for p in (pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL) for m in messages)
    )
    rnd = random.Random(7)
    for _ in range(50):
        got: list[tuple[Any, ...]] = []
        ch = Channel(got.append, lambda e: None)
        pos = 0
        while pos < len(stream):
            step = rnd.choice([1, 2, 3, 5, 4096, 65536, 300000])
            ch.data_received(stream[pos:pos + step])
            pos += step
        assert got == messages


def test_an_unreadable_message_is_dropped_and_the_stream_goes_on() -> None:
    got: list[tuple[Any, ...]] = []
    closed: list[Exception | None] = []
    ch = Channel(got.append, closed.append)
    good = pickle.dumps(("wake",))
    ch.data_received(len(b"junk").to_bytes(4, "big") + b"junk" + len(good).to_bytes(4, "big")
                     + good)
    assert got == [("wake",)] and closed == []


def test_an_impossible_length_closes_the_channel_with_an_error() -> None:
    closed: list[Exception | None] = []
    ch = Channel(lambda m: None, closed.append)
    ch.data_received((MAX_FRAME + 1).to_bytes(4, "big"))
    assert len(closed) == 1 and isinstance(closed[0], ChannelError)
    assert ch.closed and not ch.send("wake")


# ------------------------------------------------------------------------- the running pool
_SYS_PIDFD_GETFD = 438  # Linux ≥ 5.6, x86-64 and arm64 alike


def _steal_fd(pid: int, fd: int) -> int:
    """A duplicate of another process's descriptor (pidfd_getfd(2); we run as its owner)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        new = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if new < 0:
            err = ctypes.get_errno()
            if err in (errno.EPERM, errno.ENOSYS, errno.EACCES):
                pytest.skip(f"pidfd_getfd is not allowed here ({os.strerror(err)})")
            raise OSError(err, os.strerror(err))
        return int(new)
    finally:
        os.close(pidfd)


def _break_channel(child: int, parent: int) -> None:
    """Shut down the acceptor's end of its channel: both processes stay alive, and both see
    the channel end. The channel is the child's AF_UNIX stream socket made by the parent
    (SO_PEERCRED names the process that called socketpair; the event loop's own wake-up
    socket pair was made by the child)."""
    found = 0
    for entry in Path(f"/proc/{child}/fd").iterdir():
        with contextlib.suppress(OSError):
            if not os.readlink(entry).startswith("socket:"):
                continue
            s = socket.socket(fileno=_steal_fd(child, int(entry.name)))
            try:
                if s.family != socket.AF_UNIX or s.type != socket.SOCK_STREAM:
                    continue
                cred = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                if int.from_bytes(cred[:4], "little") == parent:
                    s.shutdown(socket.SHUT_RDWR)
                    found += 1
            finally:
                s.close()
    assert found == 1, found


def test_a_broken_channel_does_not_restart_a_serving_acceptor(tmp_path: Path) -> None:
    with running_platform(tmp_path, env={"MAILCASE_INBOUND__PROCESSES": "2"}) as p:
        p.cli("address", "add", "chan@example.test")
        assert p.proc is not None
        kids = sorted(_children(p.proc.pid))
        assert len(kids) == 2, kids
        # A transfer mid-DATA when the channels break (on one acceptor or the other).
        s = smtplib.SMTP(*p.smtp, timeout=30)
        s.ehlo("legit.test")
        s.mail("a@legit.test")
        s.rcpt("chan@example.test")
        assert s.docmd("DATA")[0] == 354
        s.send(b"Subject: mid\r\n\r\nfirst\r\n")
        for kid in kids:
            _break_channel(kid, p.proc.pid)
        deadline = time.monotonic() + 15
        while p.log_text().count("it keeps serving") < 2:
            assert "exited unexpectedly" not in p.log_text()
            assert time.monotonic() < deadline, p.log_text()[-2000:]
            time.sleep(0.2)
        s.send(b"second\r\n.\r\n")
        assert s.getreply()[0] == 250
        s.quit()
        # A certificate reload (SIGHUP) reaches them as a signal instead, and kills none.
        os.kill(p.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while p.log_text().count("TLS certificate reloaded") < 3:  # the parent and both
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for i in range(6):  # both acceptors still accept (the kernel spreads connections)
            with smtplib.SMTP(*p.smtp, timeout=30) as c:
                c.sendmail("a@legit.test", ["chan@example.test"], f"Subject: {i}\r\n\r\nx\r\n")
        assert sorted(_children(p.proc.pid)) == kids, "an acceptor was restarted"
        assert "exited unexpectedly" not in p.log_text()
        # Stopping still works without the channels (SIGTERM instead of "stop").
        assert p.stop() == 0
