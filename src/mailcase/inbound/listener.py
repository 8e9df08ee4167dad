"""The SMTP listener (what its sessions share, the Gateway, is in `gateway`)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket

from mailcase.config import Settings, parse_hostport
from mailcase.inbound.gateway import Gateway, protocol_settings_from
from mailcase.inbound.session import SMTPSession

__all__ = [
    "Gateway",
    "acceptor_processes",
    "check_listen_address",
    "listening_socket",
    "protocol_settings_from",
    "start_listener",
]

log = logging.getLogger(__name__)

_BACKLOG = 1024


def acceptor_processes(settings: Settings) -> int:
    """How many processes accept SMTP connections: the setting, or one per CPU core."""
    return settings.inbound.processes or max(1, min(os.cpu_count() or 1, 8))


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _cannot_listen(listen: str, what: str, option: str, e: OSError) -> SystemExit:
    advice = (
        f"stop what is using it, or choose another address with {option}"
        if e.errno == errno.EADDRINUSE
        else f"choose an address of this machine with {option}"
    )
    return SystemExit(
        f"mailcase: cannot listen for {what} on {listen}: {e.strerror or e}; {advice}."
    )


def check_listen_address(listen: str, what: str, option: str) -> None:
    """Fail with one clear line unless we can listen on `listen`: a port in use, or an address
    that is not this machine's. Checked before anything starts, so that no half-started
    platform is left behind."""
    host, port = parse_hostport(listen)
    family = _family(host)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise _cannot_listen(listen, what, option, e) from None


def listening_socket(listen: str, option: str) -> socket.socket:
    """One bound, listening socket for `listen`, to be shared by the acceptor processes.

    Why one socket and not one per process with SO_REUSEPORT: the kernel's accept queue is then
    shared, so a connection goes to whichever acceptor takes it first, which is the least busy
    one. SO_REUSEPORT hashes each connection to a process whatever its load; with 20 sessions
    one process often had several more than the other and the other one idled (measured with a
    connection per message: +10% msg/s and less CPU per message with the shared socket). A
    second mailcase on the same port is refused by the bind, as with any server.
    """
    host, port = parse_hostport(listen)
    family = _family(host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # as asyncio's create_server: IPv6 only, like one process
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise _cannot_listen(listen, "SMTP", option, e) from None
    return sock


async def start_listener(gateway: Gateway, sock: socket.socket | None = None) -> asyncio.Server:
    """Serve SMTP on `sock` (an acceptor process's share of the listening socket), or listen
    on `inbound.listen` (a single process)."""
    loop = asyncio.get_running_loop()
    if sock is not None:
        return await loop.create_server(
            lambda: SMTPSession(gateway), sock=sock, backlog=_BACKLOG
        )
    host, port = parse_hostport(gateway.settings.inbound.listen)
    family = _family(host)
    return await loop.create_server(
        lambda: SMTPSession(gateway),
        host,
        port,
        family=family,
        reuse_address=True,
        backlog=_BACKLOG,
    )
