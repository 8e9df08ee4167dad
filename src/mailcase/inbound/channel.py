"""Messages between `mailcase serve` and its acceptor processes: framed, on the event loop.

Why not `multiprocessing.Connection`: its `send` and `recv` assume a blocking file
descriptor, and the event loop (uvloop in particular) puts a descriptor it watches in
non-blocking mode. A metrics snapshot larger than the socket buffer then failed with
`BlockingIOError` half-written, and the parent, taking any `OSError` for a dead child,
restarted an acceptor that was serving (issue 11). Here an asyncio transport does the I/O
(partial writes are buffered and finished when the socket is writable; reads take what
arrived), and each message is framed with its length, so a message of any size arrives whole
or not at all.

A frame is a 4-byte big-endian length and a pickle: both ends are mailcase processes of the
same installation, started by the parent (what `multiprocessing` itself sends over its pipes).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import struct
from collections.abc import Callable
from typing import Any, cast

__all__ = ["MAX_FRAME", "Channel", "ChannelError"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
# A sanity bound, far above any message we send (a metrics snapshot is a few hundred kB):
# a larger length means the stream is not ours or out of step, which is not recoverable.
MAX_FRAME = 256 * 1024 * 1024

Message = tuple[Any, ...]


class ChannelError(Exception):
    """The other end sent something that is not a frame of ours; the channel is closed."""


class Channel(asyncio.Protocol):
    """One end of a parent–acceptor channel. `on_message` gets each message (a tuple whose
    first item names it); `on_closed` is called once, with the error if there was one."""

    def __init__(
        self,
        on_message: Callable[[Message], None],
        on_closed: Callable[[Exception | None], None],
        *,
        name: str = "channel",
    ) -> None:
        self._on_message = on_message
        self._on_closed = on_closed
        self.name = name
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._need = _HEADER.size  # bytes the next step of parsing needs in _buf
        self._closed = False
        self._lost: asyncio.Future[None] | None = None

    @classmethod
    async def open(
        cls,
        sock: socket.socket,
        on_message: Callable[[Message], None],
        on_closed: Callable[[Exception | None], None],
        *,
        name: str = "channel",
    ) -> Channel:
        """Wrap a connected stream socket (one end of `socket.socketpair()`)."""
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        _, proto = await loop.create_unix_connection(
            lambda: cls(on_message, on_closed, name=name), sock=sock
        )
        return proto

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._lost = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if len(buf) < self._need:
            return  # a large frame arrives in many reads: parse once it is complete
        pos = 0
        while len(buf) - pos >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buf, pos)
            if size > MAX_FRAME:
                self._fail(ChannelError(f"{self.name}: frame of {size} bytes announced; "
                                        f"the stream is out of step"))
                return
            end = pos + _HEADER.size + size
            if len(buf) < end:
                self._need = end - pos
                break
            payload = bytes(memoryview(buf)[pos + _HEADER.size:end])
            pos = end
            self._deliver(payload)
            if self._closed:
                return
        else:
            self._need = _HEADER.size
        del buf[:pos]

    def _deliver(self, payload: bytes) -> None:
        try:
            msg = pickle.loads(payload)  # noqa: S301 - our own processes (module docstring)
        except Exception as e:  # noqa: BLE001 - one bad message does not break the stream
            log.error("%s: dropped a message that could not be read: %s", self.name, e)
            return
        if not isinstance(msg, tuple) or not msg:
            log.error("%s: dropped a message that is not a tuple: %r", self.name, type(msg))
            return
        try:
            self._on_message(msg)
        except Exception:
            log.exception("%s: handling %r failed", self.name, msg[0])

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc)

    # ------------------------------------------------------------------ sending
    def send(self, *msg: object) -> bool:
        """Queue one message; the transport writes it when the socket takes it. False (and
        nothing sent) once the channel is closed: the caller decides what that means."""
        transport = self._transport
        if self._closed or transport is None or transport.is_closing():
            return False
        payload = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        if len(payload) > MAX_FRAME:
            raise ValueError(f"{self.name}: message {msg[0]!r} of {len(payload)} bytes is "
                             f"over the {MAX_FRAME}-byte frame limit")
        transport.write(_HEADER.pack(len(payload)) + payload)
        return True

    @property
    def pending(self) -> int:
        """Bytes written but not yet taken by the socket (0 when closed)."""
        t = self._transport
        return 0 if t is None or self._closed else t.get_write_buffer_size()

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a shutdown budget
        """Close after what is queued was written (bounded by `timeout`)."""
        t = self._transport
        if t is None:
            return
        if not t.is_closing():
            t.close()  # asyncio transports flush their buffer before closing
        if self._lost is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._lost)
            except TimeoutError:
                t.abort()

    def abort(self) -> None:
        """Close at once, dropping what is queued."""
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------------ internals
    def _fail(self, exc: Exception) -> None:
        log.error("%s", exc)
        if self._transport is not None:
            self._transport.abort()
        self._finish(exc)

    def _finish(self, exc: Exception | None) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if self._closed:
            return
        self._closed = True
        self._buf.clear()
        self._on_closed(exc)
