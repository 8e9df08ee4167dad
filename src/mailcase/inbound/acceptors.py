"""Extra SMTP acceptor processes that share one listening socket.

One Python process runs on one core; the accept path (parsing, TLS, the spool's commits) is
CPU-bound, so with `inbound.processes` > 1 `mailcase serve` starts that many processes that
each accept connections from the same socket with their own event loop and their own
group-commit writer (DESIGN.md: several acceptors, no shared write lock). The parent binds the
socket and hands each child a duplicate (`listener.listening_socket` says why one socket and
not SO_REUSEPORT); it keeps its own copy open, so connections wait in the backlog while a
crashed child is started again instead of being refused. On SQLite each commits to a spool file
of its own, which the parent moves into the database (`storage.spoolfiles`); on PostgreSQL
they commit to the database directly.

The parent keeps the pipeline, delivery and the HTTP API. Children talk to it over a
socket pair (`inbound.channel`: framed messages, non-blocking I/O on the event loop):
"ready", "wake" (something was stored: process it now) and a metrics snapshot every second;
the parent sends "reload_tls" (SIGHUP), "reload_addresses" and "stop". A child is started
again only when its process exits, never because its channel failed: that once restarted
acceptors in the middle of their transfers (issue 11). A child dies with its parent
(PR_SET_PDEATHSIG), so a crashed parent never leaves an orphan holding the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import SynchronizedArray
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric

from mailcase import applog, eventloop, maillog
from mailcase.config import Settings
from mailcase.inbound.addressbook import RecipientPolicy
from mailcase.inbound.channel import Channel
from mailcase.inbound.limits import BUCKETS, SharedCounts
from mailcase.inbound.listener import listening_socket
from mailcase.inbound.session import set_queue_id_slot

__all__ = ["AcceptorPool"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_SNAPSHOT_INTERVAL = 1.0
_WAKE_INTERVAL = 0.05
_RESPAWN_PAUSE = 1.0
# What a child without a working channel gets instead of a message (it handles both signals;
# "reload_addresses" needs nothing: a child follows the addresses' generation itself).
_SIGNAL_FALLBACK = {"stop": signal.SIGTERM, "reload_tls": signal.SIGHUP}


@dataclass(slots=True)
class _Child:
    proc: BaseProcess
    channel: Channel | None = None  # None until it is open, and after it broke


class AcceptorPool:
    """The parent's side: start, watch, message and stop `count` child acceptors.

    A child is started again only when its process exits (its sentinel becomes readable),
    never because of its channel: a channel that breaks while the child serves is logged, and
    the child keeps serving its sessions (it then gets SIGTERM instead of "stop" at shutdown,
    and the spool mover's polling replaces its wake-ups).
    """

    def __init__(
        self,
        settings: Settings,
        cert: Path,
        key: Path,
        count: int,
        *,
        on_wake: Callable[[], None],
        policy: RecipientPolicy | None = None,
    ) -> None:
        self.settings, self.cert, self.key, self.count = settings, cert, key, count
        self.on_wake = on_wake
        # Pickled here and unpickled by the child after it is tied to our life (PDEATHSIG):
        # importing the policy's module must not keep an orphan holding the SMTP socket.
        self._policy = pickle.dumps(policy)
        self.snapshots: dict[int, list[Metric]] = {}
        self._ctx = multiprocessing.get_context("spawn")
        self.counts = SharedCounts.create(self._ctx, count + 1)
        self._children: dict[int, _Child] = {}
        self._ready: dict[int, asyncio.Event] = {}
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._spawning: set[asyncio.Task[None]] = set()

    async def start(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109 - a startup budget
        """Start the children and wait until each listens."""
        self._loop = asyncio.get_running_loop()
        if self.count:
            self._sock = listening_socket(
                self.settings.inbound.listen, "--smtp-listen or [inbound] listen"
            )
        for index in range(1, self.count + 1):
            await self._spawn(index)
        await asyncio.wait_for(
            asyncio.gather(*(e.wait() for e in self._ready.values())), timeout
        )

    async def _spawn(self, index: int) -> None:
        assert self._loop is not None
        parent_end, child_end = socket.socketpair()
        proc = self._ctx.Process(
            target=child_main,
            args=(
                self.settings.model_dump(mode="json"), str(self.cert), str(self.key),
                child_end, index, os.getpid(), self.counts.array, self._sock, self._policy,
            ),
            name=f"mailcase-acceptor-{index}",
            daemon=False,
        )
        try:
            proc.start()
        finally:
            child_end.close()
        child = _Child(proc)
        self._children[index] = child
        self._ready[index] = asyncio.Event()
        # Only the process's exit restarts it (see the class docstring).
        self._loop.add_reader(proc.sentinel, self._child_exited, index, proc)
        try:
            child.channel = await Channel.open(
                parent_end,
                lambda msg: self._on_message(index, msg),
                lambda exc: self._on_channel_closed(index, proc, exc),
                name=f"channel to SMTP acceptor {index}",
            )
        except OSError as e:
            parent_end.close()
            log.error("SMTP acceptor %d: no channel to it (%s); it serves without one", index, e)
            self._ready[index].set()  # it listens or exits; do not hold up the start

    def _on_message(self, index: int, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "wake":
            self.on_wake()
        elif kind == "metrics":
            self.snapshots[index] = msg[1]
        elif kind == "ready":
            self._ready[index].set()

    def _on_channel_closed(self, index: int, proc: BaseProcess, exc: Exception | None) -> None:
        child = self._children.get(index)
        if child is None or child.proc is not proc:
            return  # an earlier child's channel: _child_exited dealt with it
        child.channel = None
        self.snapshots.pop(index, None)  # no fresh figures come from it any more
        if self._stopping:
            return
        # A child that is exiting closes its channel first; the sentinel follows at once. Look
        # again a moment later, so that an exit is reported once, as an exit.
        assert self._loop is not None
        self._loop.call_later(_RESPAWN_PAUSE, self._report_broken_channel, index, proc, exc)

    def _report_broken_channel(
        self, index: int, proc: BaseProcess, exc: Exception | None
    ) -> None:
        child = self._children.get(index)
        if self._stopping or child is None or child.proc is not proc or not proc.is_alive():
            return
        log.error(
            "the channel to SMTP acceptor %d (pid %s) closed (%s); it keeps serving, without "
            "sending metrics or wake-ups; it is replaced when it exits", index, proc.pid,
            exc or "end of stream",
        )

    def _child_exited(self, index: int, proc: BaseProcess) -> None:
        assert self._loop is not None
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(proc.sentinel)
        child = self._children.get(index)
        if child is None or child.proc is not proc:
            return
        del self._children[index]
        if child.channel is not None:
            child.channel.abort()
        proc.join(timeout=5)  # it has exited: this only reaps it
        self.snapshots.pop(index, None)
        self.counts.clear_row(index)  # its connections died with it
        if self._stopping:
            return
        log.error(
            "SMTP acceptor %d exited unexpectedly (code %s); starting it again", index,
            proc.exitcode,
        )
        self._loop.call_later(_RESPAWN_PAUSE, self._respawn, index)

    def _respawn(self, index: int) -> None:
        if not self._stopping and index not in self._children:
            task = asyncio.ensure_future(self._spawn(index))
            self._spawning.add(task)
            task.add_done_callback(self._spawning.discard)

    def broadcast(self, *msg: object) -> None:
        """Send a message to every child; one whose channel broke gets the message's signal
        instead, if it has one (`_SIGNAL_FALLBACK`)."""
        for index, child in list(self._children.items()):
            if child.channel is not None and child.channel.send(*msg):
                continue
            sig = _SIGNAL_FALLBACK.get(str(msg[0]))
            if sig is not None and self._ready[index].is_set() and child.proc.pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(child.proc.pid, sig)

    async def stop(self, timeout: float = 15.0) -> None:  # noqa: ASYNC109 - a shutdown budget
        """Ask the children to finish their sessions and exit; kill those that do not."""
        self._stopping = True
        for task in list(self._spawning):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for child in list(self._children.values()):
            if child.channel is None or not child.channel.send("stop"):
                with contextlib.suppress(OSError, ValueError):
                    child.proc.terminate()  # SIGTERM: the child stops the same way
        deadline = time.monotonic() + timeout
        for child in list(self._children.values()):
            proc = child.proc
            remaining = max(0.0, deadline - time.monotonic())
            await asyncio.to_thread(proc.join, remaining)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, 5)
            if self._loop is not None:
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(proc.sentinel)
            if child.channel is not None:
                child.channel.abort()
        self._children.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# ---------------------------------------------------------------------------------- the child
def _die_with_parent(parent_pid: int) -> None:
    """Linux: get SIGKILL when the parent dies; then check it did not die already."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def child_main(
    settings_data: dict[str, Any],
    cert: str,
    key: str,
    conn: socket.socket,
    index: int,
    parent_pid: int,
    counts: SynchronizedArray[int],
    sock: socket.socket,
    policy_data: bytes = b"",
) -> None:
    """Entry point of an acceptor process (spawned: imports everything afresh; `sock`, the
    listening socket, arrives as a duplicated file descriptor)."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent decides
    settings = Settings.model_validate(settings_data)
    # Our parent pickled it (see AcceptorPool.__init__).
    policy: RecipientPolicy | None = pickle.loads(policy_data) if policy_data else None  # noqa: S301 - see above
    applog.configure(
        settings.log.level, f"%(asctime)s %(levelname)s %(name)s[acceptor {index}]: %(message)s",
        log_format=settings.log.format, fields={"acceptor": index},
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    maillog.configure(settings.log.maillog)
    sys.setswitchinterval(0.0005)
    shared = SharedCounts(counts, len(counts) // (BUCKETS + 1))
    set_queue_id_slot(index)
    eventloop.run(
        _child(settings, Path(cert), Path(key), conn, index, parent_pid, shared, sock, policy),
        settings.server.event_loop,
    )


async def _child(
    settings: Settings, cert: Path, key: Path, conn: socket.socket,
    index: int, parent_pid: int, shared: SharedCounts, sock: socket.socket,
    policy: RecipientPolicy | None,
) -> None:
    from mailcase.inbound.addressbook import AddressBook
    from mailcase.inbound.gateway import Gateway
    from mailcase.inbound.listener import start_listener
    from mailcase.metrics import Metrics
    from mailcase.storage.db import make_engine
    from mailcase.storage.spool import Spool
    from mailcase.storage.spoolfiles import open_spool_file, spool_file
    from mailcase.tls import ServerTLS

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    engine = make_engine(settings.database_url)
    # SQLite: this acceptor commits to a spool file of its own, so that its group commits
    # never wait for another process's write lock; the parent moves them into the database.
    spool_engine = engine
    if engine.dialect.name == "sqlite":
        spool_engine = await asyncio.to_thread(
            open_spool_file, spool_file(settings.data_dir, index)
        )
    tls = ServerTLS(cert, key, settings.tls.min_version)
    metrics = Metrics()
    spool = Spool(spool_engine, on_commit=metrics.on_commit)
    spool.start()
    book = AddressBook(engine, settings.automation, policy=policy)
    await asyncio.to_thread(book.reload)
    stored = False

    def on_stored() -> None:
        nonlocal stored
        stored = True

    gateway = Gateway(
        settings=settings, spool=spool, tls=tls, addressbook=book, metrics=metrics,
        on_stored=on_stored, shared_counts=shared, counts_row=index,
    )
    server = await start_listener(gateway, sock)
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def reload_tls() -> None:
        try:
            tls.reload()
        except Exception as e:  # noqa: BLE001 - keep the old certificate
            log.error("TLS reload failed, keeping the previous certificate: %s", e)
        else:
            log.info("TLS certificate reloaded")

    # The parent signals a child whose channel broke (AcceptorPool.broadcast).
    loop.add_signal_handler(signal.SIGHUP, reload_tls)

    def on_message(msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "stop":
            stop.set()
        elif kind == "reload_tls":
            reload_tls()
        elif kind == "reload_addresses":
            book.reload()

    def on_closed(exc: Exception | None) -> None:
        if os.getppid() != parent_pid:
            stop.set()  # the parent is gone (PR_SET_PDEATHSIG kills us too)
            return
        # The parent is alive: keep serving the sessions (it stops us with SIGTERM).
        log.error("the channel to the parent closed (%s); serving on without it",
                  exc or "end of stream")

    channel = await Channel.open(conn, on_message, on_closed, name="channel to the parent")
    channel.send("ready", index)

    async def report() -> None:
        nonlocal stored
        last_snapshot = 0.0
        while not channel.closed:
            await asyncio.sleep(_WAKE_INTERVAL)
            if stored:
                stored = False
                channel.send("wake")
            now = time.monotonic()
            # One snapshot in flight at most: while the parent has not taken the last one,
            # a newer one waits for the next interval instead of piling up in the buffer.
            if now - last_snapshot >= _SNAPSHOT_INTERVAL and channel.pending == 0:
                last_snapshot = now
                channel.send("metrics", list(metrics.registry.collect()))

    tasks = [asyncio.create_task(book.follow()), asyncio.create_task(report())]
    try:
        await stop.wait()
    finally:
        server.close()
        await gateway.drain(10.0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(spool.close)
        channel.send("wake")  # what the last commits stored: move it now
        await channel.aclose()
        engine.dispose()
        if spool_engine is not engine:
            spool_engine.dispose()
