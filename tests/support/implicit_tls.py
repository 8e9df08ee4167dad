"""An implicit-TLS front end (RFC 8314, port 465) for a plaintext SMTP server, for tests.

Postfix's test instances speak plaintext on their port; a relay on port 465 must be spoken
to in TLS from the first byte. This asyncio proxy terminates TLS on ``host:port`` (default
127.0.0.2:465: port 465 is what makes mailcase use implicit TLS, and a second loopback address
keeps it clear of anything on 127.0.0.1) and forwards the plaintext to the upstream server.

    async with ImplicitTLSFrontend(upstream_port, cert, key) as front:   # front.port == 465
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from types import TracebackType

__all__ = ["ImplicitTLSFrontend"]


class ImplicitTLSFrontend:
    def __init__(self, upstream_port: int, cert: Path, key: Path, *, host: str = "127.0.0.2",
                 port: int = 465) -> None:
        self.upstream_port = upstream_port
        self.host, self.port = host, port
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.connections = 0
        self.versions: list[str | None] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ImplicitTLSFrontend:
        self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                  ssl=self.ctx)
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
        obj = cw.get_extra_info("ssl_object")
        self.versions.append(obj.version() if obj is not None else None)
        sr, sw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pipes = {asyncio.create_task(self._pipe(cr, sw)), asyncio.create_task(self._pipe(sr, cw))}
        self._tasks |= pipes
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
                self._tasks.discard(task)
            for w in (sw, cw):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()

    @staticmethod
    async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
