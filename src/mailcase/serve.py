"""`mailcase serve`: the platform's roles in one process (all of them by default).

SMTP listener, the pipeline worker, the delivery engine and the HTTP API share one event loop;
storage work runs in threads (the spool's writer, `asyncio.to_thread` elsewhere). What runs is
built by the composition root (`mailcase.platform.build_platform`); this module adds only the
process around it. SIGHUP reloads the TLS certificate for new handshakes; SIGTERM/SIGINT stop
accepting, let sessions that are storing a message finish, flush the spool and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from mailcase import applog, eventloop, maillog
from mailcase.config import Settings, parse_hostport
from mailcase.errors import TLSSetupError
from mailcase.platform import Platform, Role, build_platform

__all__ = ["run", "serve"]

log = logging.getLogger("mailcase")

_SWITCH_INTERVAL = 0.0005
_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


async def serve(
    settings: Settings,
    *,
    ready: asyncio.Event | None = None,
    roles: Sequence[Role] | None = None,
    notice: str | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or until the task is cancelled)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before anything listens: a SIGTERM that arrives while the platform starts (its ports
    # may already answer) stops it cleanly once it is up, instead of killing it half-started.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        async with build_platform(settings, roles) as p:
            _install_reload(p)
            if notice:
                log.warning("%s", notice)
            _log_ready(p)
            if ready is not None:
                ready.set()
            await stop.wait()
    finally:
        for sig in _SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)


def _install_reload(p: Platform) -> None:
    """SIGHUP: a new certificate, for this process and its acceptors."""
    loop = asyncio.get_running_loop()

    def reload_tls() -> None:
        if p.acceptors is not None:
            p.acceptors.broadcast("reload_tls")
        if p.tls is None:
            return
        try:
            p.tls.reload()
            log.warning("TLS certificate reloaded from %s", p.tls.cert_file)
        except TLSSetupError as e:
            log.error("TLS reload failed, keeping the previous certificate: %s", e)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, reload_tls)


def _log_ready(p: Platform) -> None:
    """The start-up record, at INFO: where it listens, which instance and database, which
    certificate (subject and expiry) STARTTLS offers."""
    from mailcase.storage.db import describe_url
    from mailcase.tls.certs import describe_certificate

    s = p.settings
    parts = []
    if "smtp" in p.roles:
        parts.append(
            f"SMTP {s.inbound.listen} ({p.processes} acceptor process"
            f"{'' if p.processes == 1 else 'es'}, "
            f"{eventloop.name(asyncio.get_running_loop())} loop)"
        )
    if "web" in p.roles:
        host, port = parse_hostport(s.http.listen)
        parts.append(f"HTTP http://{host}:{port}")
    tls = describe_certificate(p.tls.cert_file) if p.tls is not None else "none"
    log.info(
        "mailcase ready: %s; roles %s; data dir %s; database %s; TLS certificate %s",
        ", ".join(parts) or "no listener",
        ",".join(p.roles),
        s.data_dir.resolve(),
        describe_url(s.database_url),
        tls,
    )


def run(
    settings: Settings, roles: Sequence[Role] | None = None, *, notice: str | None = None
) -> None:
    """Blocking entry point used by the CLI. `notice` is logged once the platform is up (at
    WARNING, so that it shows at every level): the CLI's word that this start created a new
    instance. Not before: a start that fails keeps its one line of error."""
    applog.configure(settings.log.level, "%(asctime)s %(levelname)s %(name)s: %(message)s",
                     log_format=settings.log.format)
    maillog.configure(settings.log.maillog)
    # The spool's writer thread gives up the GIL for every fsync and must get it back quickly:
    # with the default 5 ms switch interval a busy event loop made each group commit wait
    # several intervals (the "convoy" effect), which capped the accept rate.
    sys.setswitchinterval(_SWITCH_INTERVAL)
    eventloop.run(serve(settings, roles=roles, notice=notice), settings.server.event_loop)
