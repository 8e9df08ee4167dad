"""`mailcase serve`: the whole platform in one process.

SMTP listener, the pipeline worker and the HTTP API share one event loop; storage work runs in
threads (the spool's writer, `asyncio.to_thread` elsewhere). SIGHUP reloads the TLS
certificate for new handshakes; SIGTERM/SIGINT stop accepting, let sessions that are storing a
message finish, flush the spool and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import uvicorn

from mailcase import applog, eventloop, maillog
from mailcase.config import Settings, parse_hostport
from mailcase.delivery.engine import DeliveryEngine
from mailcase.errors import TLSSetupError
from mailcase.filemodes import private_dir, tighten_data_dir
from mailcase.inbound.acceptors import AcceptorPool
from mailcase.inbound.addressbook import AddressBook
from mailcase.inbound.listener import (
    Gateway,
    acceptor_processes,
    check_listen_address,
    start_listener,
)
from mailcase.metrics import Metrics
from mailcase.pipeline.destinations import build_destinations
from mailcase.pipeline.priority import background_executor
from mailcase.pipeline.worker import Pipeline
from mailcase.secrets import server_secret
from mailcase.storage import messages
from mailcase.storage.db import make_engine, upgrade
from mailcase.storage.spool import Spool
from mailcase.storage.spoolfiles import SpoolMover, spool_dir
from mailcase.tls import ServerTLS, ensure_certificate
from mailcase.web.app import create_app

__all__ = ["run", "serve"]

log = logging.getLogger("mailcase")

_SHUTDOWN_GRACE = 10.0
_SWITCH_INTERVAL = 0.0005
_SPOOL_POLL = 1.0
_MOVE_GATHER = 0.1


def _tls_files(settings: Settings) -> ServerTLS:
    if settings.tls.cert_file is not None and settings.tls.key_file is not None:
        cert, key = settings.tls.cert_file, settings.tls.key_file
    else:
        cert, key = ensure_certificate(settings.tls_dir, settings.server.hostname)
    return ServerTLS(cert.resolve(), key.resolve(), settings.tls.min_version)


def _pipeline_batch(settings: Settings, processes: int, dialect: str) -> int:
    """`pipeline.batch_size`, or the automatic size: small when the SMTP acceptor in this
    process commits to the same SQLite database (it waits for the write lock while a batch
    runs), large otherwise, where per-batch costs (queries, a commit) dominate."""
    if settings.pipeline.batch_size:
        return settings.pipeline.batch_size
    return 50 if processes == 1 and dialect == "sqlite" else 500


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or until the task is cancelled)."""
    private_dir(settings.data_dir)
    tighten_data_dir(settings.data_dir)
    check_listen_address(settings.inbound.listen, "SMTP", "--smtp-listen or [inbound] listen")
    check_listen_address(settings.http.listen, "HTTP", "--http-listen or [http] listen")
    engine = make_engine(settings.database_url)
    await asyncio.to_thread(upgrade, engine, server_secret=lambda: server_secret(settings))
    tls = _tls_files(settings)
    metrics = Metrics()
    metrics.watch_queue_depths(lambda: messages.count_by_state(engine))
    spool = Spool(engine, on_commit=metrics.on_commit)
    spool.start()
    book = AddressBook(engine, settings.automation)
    await asyncio.to_thread(book.reload)
    delivery = DeliveryEngine(settings, engine, metrics)
    processes = acceptor_processes(settings)
    # Processing yields the CPU to the acceptors, when they run in processes of their own.
    processing_pool: ThreadPoolExecutor | None = None
    catch_up_pool: ThreadPoolExecutor | None = None
    if processes > 1:
        processing_pool = background_executor(
            "mailcase-processing", settings.pipeline.nice, workers=2
        )
        catch_up_pool = background_executor("mailcase-catch-up", 0, workers=2)
    pipeline = Pipeline(
        engine,
        metrics,
        build_destinations(settings, engine),
        batch_size=_pipeline_batch(settings, processes, engine.dialect.name),
        poll_interval=settings.pipeline.poll_interval,
        executor=processing_pool,
        catch_up=catch_up_pool,
        catch_up_after=settings.pipeline.catch_up_after,
        batch_bytes=settings.pipeline.batch_bytes,
    )
    gateway = Gateway(
        settings=settings,
        spool=spool,
        tls=tls,
        addressbook=book,
        metrics=metrics,
        on_stored=pipeline.wake,
    )
    # One acceptor: this process. Several: all in child processes, and this one keeps the
    # pipeline and the HTTP API, so that no acceptor carries more work than the others.
    smtp_server = await start_listener(gateway) if processes == 1 else None
    n_children = 0 if processes == 1 else processes
    # SQLite: acceptor children commit to spool files of their own; moved in here (also what
    # an earlier run left behind, whatever its number of processes).
    mover = None
    if engine.dialect.name == "sqlite":
        mover = SpoolMover(engine, spool_dir(settings.data_dir))
    moved = asyncio.Event()

    async def move_spooled() -> None:
        assert mover is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                await eventloop.wait_for(moved.wait(), _SPOOL_POLL)
            except TimeoutError:
                pass
            moved.clear()
            try:
                if await loop.run_in_executor(pipeline.current_executor, mover.move_all):
                    pipeline.wake()
            except Exception as e:  # noqa: BLE001 - the database may be briefly unavailable
                log.error("moving spooled messages failed, will retry: %s", e)
            # Under load the acceptors wake us every few ms: let their commits gather into
            # one move (each is a transaction and an fsync on the main database).
            await asyncio.sleep(_MOVE_GATHER)

    if mover is not None:
        await asyncio.to_thread(mover.move_all)
    pool = AcceptorPool(
        settings, tls.cert_file, tls.key_file, n_children,
        on_wake=moved.set if mover is not None else pipeline.wake,
    )

    def addresses_changed() -> None:
        book.reload()
        pool.broadcast("reload_addresses")

    app = create_app(
        engine,
        metrics,
        on_addresses_changed=addresses_changed,
        exposition=lambda: metrics.exposition(list(pool.snapshots.values())),
        settings=settings,
        on_outbound_queued=delivery.wake,
    )
    http_host, http_port = parse_hostport(settings.http.listen)
    web = uvicorn.Server(
        uvicorn.Config(
            app,
            host=http_host,
            port=http_port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            server_header=False,
        )
    )
    web.install_signal_handlers = lambda: None  # type: ignore[method-assign]

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def reload_tls() -> None:
        pool.broadcast("reload_tls")
        try:
            tls.reload()
            log.warning("TLS certificate reloaded from %s", tls.cert_file)
        except TLSSetupError as e:
            log.error("TLS reload failed, keeping the previous certificate: %s", e)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, reload_tls)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)

    background = [
        asyncio.create_task(pipeline.run(), name="pipeline"),
        *([asyncio.create_task(move_spooled(), name="spool-mover")] if mover else []),
        asyncio.create_task(delivery.run(), name="delivery"),
    ]
    if smtp_server is not None:  # the children follow the addresses themselves
        background.append(asyncio.create_task(book.follow(), name="addressbook"))
    try:
        await pool.start()
    except BaseException:
        if smtp_server is not None:
            smtp_server.close()
        await pool.stop(timeout=5)
        spool.close()
        raise
    web_task = asyncio.create_task(web.serve(), name="http")
    while not web.started and not web_task.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.01)
    if web_task.done():
        if smtp_server is not None:
            smtp_server.close()
        spool.close()
        web_task.result()
        raise SystemExit(f"HTTP listener on {settings.http.listen} did not start")
    log.warning(
        "mailcase ready: SMTP %s (%d acceptor process%s, %s loop), HTTP http://%s:%d (data in "
        "%s, database %s)",
        settings.inbound.listen,
        processes,
        "" if processes == 1 else "es",
        eventloop.name(asyncio.get_running_loop()),
        http_host,
        http_port,
        settings.data_dir,
        "postgresql" if settings.database_url.startswith("postgresql") else "sqlite",
    )
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        if smtp_server is not None:
            smtp_server.close()
        stopping_children = asyncio.create_task(pool.stop())
        await gateway.drain(_SHUTDOWN_GRACE)
        for t in background:
            t.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        web.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(web_task, timeout=5)
        await stopping_children
        await asyncio.to_thread(spool.close)
        if mover is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(mover.move_all)
            await asyncio.to_thread(mover.close)
        for pool_ in (processing_pool, catch_up_pool):  # a batch still running finishes
            if pool_ is not None:
                await asyncio.to_thread(pool_.shutdown)
        engine.dispose()


def run(settings: Settings) -> None:
    """Blocking entry point used by the CLI."""
    applog.configure(settings.log.level, "%(asctime)s %(levelname)s %(name)s: %(message)s")
    maillog.configure(settings.log.maillog)
    # The spool's writer thread gives up the GIL for every fsync and must get it back quickly:
    # with the default 5 ms switch interval a busy event loop made each group commit wait
    # several intervals (the "convoy" effect), which capped the accept rate.
    sys.setswitchinterval(_SWITCH_INTERVAL)
    eventloop.run(serve(settings), settings.server.event_loop)
