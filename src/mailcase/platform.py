"""The composition root: the one place that builds a mailcase platform from its settings.

`mailcase serve`, the CLI and the tests use the same builders, so what a process does never
depends on which modules it happened to import (DESIGN.md, "Wiring"):

- `build_outbound(settings)`: the enqueue hooks (compliance BCC, suppression list) and the
  delivery hooks (DKIM, VERP return path, DSNs), for every process that enqueues or delivers;
- `build_destinations(settings, engine, outbound)`: the pipeline's destinations, with
  Email-to-Case's automation and the tasks feature's case-created listener plugged in;
- `FeatureRecipients` (`mailcase.features.recipients`): the `RecipientPolicy` the SMTP side's
  address book asks;
- `build_platform(settings, roles)`: an async context manager that runs one `build_*` step per
  part under an `AsyncExitStack`. A step that fails unwinds every step started before it (no
  acceptor process, listener or task is left running); leaving the block stops them all, the
  last started first.

Roles (`--roles` / `server.roles`): `smtp` (listener, acceptor processes, spool mover),
`pipeline`, `delivery`, `web`, `fetch` (the IMAP mailbox sources). One process runs all five
by default; on PostgreSQL, processes
or machines sharing one database can split them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from sqlalchemy.engine import Engine

from mailcase import eventloop
from mailcase.config import Settings, parse_hostport
from mailcase.delivery.engine import DeliveryEngine
from mailcase.delivery.hooks import DeliveryHooks
from mailcase.features.cases.automation.service import Automation
from mailcase.features.cases.destination import CaseDestination
from mailcase.features.recipients import FeatureRecipients
from mailcase.features.tasks.service import on_case_created as create_case_task
from mailcase.filemodes import private_dir, tighten_data_dir
from mailcase.inbound.acceptors import AcceptorPool
from mailcase.inbound.addressbook import AddressBook
from mailcase.inbound.gateway import Gateway
from mailcase.inbound.listener import acceptor_processes, check_listen_address, start_listener
from mailcase.metrics import Metrics
from mailcase.outbound import dkim
from mailcase.outbound.bounces import destination as bounce_destination
from mailcase.outbound.bounces import hook as bounce_hook
from mailcase.outbound.bounces import notify as bounce_notify
from mailcase.outbound.bounces import verp
from mailcase.outbound.queue.enqueue import EnqueueHook
from mailcase.pipeline.priority import background_executor
from mailcase.pipeline.worker import AddressInbox, Destination, Pipeline
from mailcase.secrets import server_secret
from mailcase.sources.fetcher import Fetcher
from mailcase.sources.metrics import SourceMetrics
from mailcase.sources.store import count_by_state as sources_by_state
from mailcase.storage import messages
from mailcase.storage.db import make_engine, upgrade
from mailcase.storage.spool import Spool
from mailcase.storage.spoolfiles import (
    SpoolMover,
    fetcher_spool_file,
    open_spool_file,
    spool_dir,
)
from mailcase.tls import ServerTLS, ensure_certificate
from mailcase.web.app import create_app

__all__ = [
    "ROLES",
    "FeatureRecipients",
    "Outbound",
    "Platform",
    "Role",
    "build_destinations",
    "build_outbound",
    "build_platform",
    "enqueue_hooks",
    "parse_roles",
]

log = logging.getLogger("mailcase")

Role = Literal["smtp", "pipeline", "delivery", "web", "fetch"]
#: Every role, in the order they are started.
ROLES: tuple[Role, ...] = ("smtp", "pipeline", "delivery", "web", "fetch")

_SHUTDOWN_GRACE = 10.0
_SPOOL_POLL = 1.0
_MOVE_GATHER = 0.1
_STOP_CHILDREN = 5.0
_STOP_WEB = 5.0


def parse_roles(value: str | Iterable[str]) -> tuple[Role, ...]:
    """"smtp,web" (or a list) → the roles in start order; a clear error for an unknown one."""
    items = value.split(",") if isinstance(value, str) else list(value)
    wanted = {r.strip().lower() for r in items if r.strip()}
    unknown = sorted(wanted - set(ROLES))
    if unknown:
        raise ValueError(
            f"unknown role(s) {', '.join(unknown)}; choose from {','.join(ROLES)}"
        )
    if not wanted:
        raise ValueError(f"no role given; choose from {','.join(ROLES)}")
    return tuple(r for r in ROLES if r in wanted)


# ---------------------------------------------------------------- outbound wiring (sync)


@dataclass(frozen=True, slots=True)
class Outbound:
    """What every process that enqueues or delivers mail must apply."""

    enqueue_hooks: tuple[EnqueueHook, ...]
    delivery: DeliveryHooks


def build_outbound(settings: Settings) -> Outbound:
    """The outbound hooks of this instance (synchronous: the CLI uses it too)."""
    return Outbound(
        enqueue_hooks=(bounce_hook.enqueue_hook(settings),),
        delivery=DeliveryHooks(
            sign=dkim.sign_for_delivery,
            return_path=verp.return_path_for,
            on_permanent_failure=bounce_notify.on_permanent_failure,
        ),
    )


def enqueue_hooks(settings: Settings) -> tuple[EnqueueHook, ...]:
    """The enqueue hooks alone (what `mailcase.clikit.Ctx` asks for)."""
    return build_outbound(settings).enqueue_hooks


def build_destinations(
    settings: Settings, engine: Engine, outbound: Outbound | None = None
) -> list[Destination]:
    """The pipeline's destinations, in the order they run for each message."""
    outbound = outbound or build_outbound(settings)
    cases = CaseDestination(
        settings,
        automation=Automation(outbound.enqueue_hooks),
        on_case_created=(create_case_task,),
    )
    return [AddressInbox(), cases, bounce_destination.BounceDestination(settings)]


# ---------------------------------------------------------------- the platform


@dataclass
class Platform:
    """What `build_platform` started; parts of roles not run here stay None."""

    settings: Settings
    roles: tuple[Role, ...]
    engine: Engine
    metrics: Metrics
    outbound: Outbound
    stack: contextlib.AsyncExitStack
    tls: ServerTLS | None = None
    spool: Spool | None = None
    addressbook: AddressBook | None = None
    gateway: Gateway | None = None
    acceptors: AcceptorPool | None = None
    processes: int = 1
    pipeline: Pipeline | None = None
    delivery: DeliveryEngine | None = None
    web: _WebServer | None = None
    fetcher: Fetcher | None = None
    #: SQLite with the smtp role here: wakes the mover of spool files (None otherwise).
    wake_mover: Callable[[], None] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def wake_pipeline(self) -> None:
        if self.pipeline is not None:
            self.pipeline.wake()

    def wake_delivery(self) -> None:
        if self.delivery is not None:
            self.delivery.wake()

    def addresses_changed(self) -> None:
        """A receiving address was changed through the API: reload here and in children."""
        if self.addressbook is not None:
            self.addressbook.reload()
        if self.acceptors is not None:
            self.acceptors.broadcast("reload_addresses")

    def start_task(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """A background task of a step, cancelled (and awaited) when the platform stops."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.append(task)

        async def stop() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self.stack.push_async_callback(stop)


class _WebServer(uvicorn.Server):
    """uvicorn that leaves the process's signals alone: `mailcase.serve` handles them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _tls_files(settings: Settings) -> ServerTLS:
    if settings.tls.cert_file is not None and settings.tls.key_file is not None:
        cert, key = settings.tls.cert_file, settings.tls.key_file
    else:
        cert, key = ensure_certificate(settings.tls_dir, settings.server.hostname)
    return ServerTLS(cert.resolve(), key.resolve(), settings.tls.min_version)


def _pipeline_batch(settings: Settings, processes: int, dialect: str) -> int:
    """`pipeline.batch_size`, or the automatic size: small when the SMTP acceptor in this
    process commits to the same SQLite database (it waits for the write lock while a batch
    runs), large otherwise, where per-batch costs (queries, a commit) dominate. `processes`
    is 0 when this process runs no SMTP role."""
    if settings.pipeline.batch_size:
        return settings.pipeline.batch_size
    return 50 if processes == 1 and dialect == "sqlite" else 500


async def build_storage(
    settings: Settings, stack: contextlib.AsyncExitStack
) -> tuple[Engine, Metrics]:
    """The database (migrated) and the metrics every other step reports to."""
    private_dir(settings.data_dir)
    tighten_data_dir(settings.data_dir)
    engine = make_engine(settings.database_url)
    stack.callback(engine.dispose)
    await asyncio.to_thread(upgrade, engine, server_secret=lambda: server_secret(settings))
    metrics = Metrics()
    metrics.watch_queue_depths(lambda: messages.count_by_state(engine))
    metrics.watch_backlog_age(lambda: messages.backlog_age(engine))
    return engine, metrics


async def build_pipeline(p: Platform) -> None:
    """The pipeline worker: spooled messages to the features' destinations."""
    processing_pool: ThreadPoolExecutor | None = None
    catch_up_pool: ThreadPoolExecutor | None = None
    if p.processes > 1:
        # Processing yields the CPU to the acceptors, when they run in processes of their own.
        processing_pool = background_executor(
            "mailcase-processing", p.settings.pipeline.nice, workers=2
        )
        catch_up_pool = background_executor("mailcase-catch-up", 0, workers=2)
        for pool in (processing_pool, catch_up_pool):  # a batch still running finishes
            p.stack.push_async_callback(asyncio.to_thread, pool.shutdown)
    p.pipeline = Pipeline(
        p.engine,
        p.metrics,
        build_destinations(p.settings, p.engine, p.outbound),
        batch_size=_pipeline_batch(p.settings, p.processes, p.engine.dialect.name),
        poll_interval=p.settings.pipeline.poll_interval,
        executor=processing_pool,
        catch_up=catch_up_pool,
        catch_up_after=p.settings.pipeline.catch_up_after,
        batch_bytes=p.settings.pipeline.batch_bytes,
    )
    p.start_task(p.pipeline.run(), "pipeline")


async def build_delivery(p: Platform) -> None:
    """The delivery engine, with the outbound hooks of this instance."""
    p.delivery = DeliveryEngine(p.settings, p.engine, p.metrics, hooks=p.outbound.delivery)
    p.start_task(p.delivery.run(), "delivery")


async def build_smtp(p: Platform) -> None:
    """Spool, address book, listener (one process) or acceptor processes (several), and on
    SQLite the mover that brings the acceptors' spool files into the database."""
    settings = p.settings
    p.tls = tls = _tls_files(settings)
    spool = p.spool = Spool(p.engine, on_commit=p.metrics.on_commit)
    spool.start()
    p.stack.push_async_callback(asyncio.to_thread, spool.close)
    policy = FeatureRecipients()
    book = p.addressbook = AddressBook(p.engine, settings.automation, policy=policy)
    await asyncio.to_thread(book.reload)
    # SQLite: acceptor children commit to spool files of their own; moved in here (also what
    # an earlier run left behind, whatever its number of processes).
    moved = asyncio.Event()
    if p.engine.dialect.name == "sqlite":
        mover = SpoolMover(p.engine, spool_dir(settings.data_dir))

        async def final_move() -> None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(mover.move_all)
            await asyncio.to_thread(mover.close)

        p.stack.push_async_callback(final_move)
        await asyncio.to_thread(mover.move_all)
        p.start_task(_move_spooled(p, mover, moved), "spool-mover")
        p.wake_mover = moved.set
    else:
        mover = None
    gateway = p.gateway = Gateway(
        settings=settings,
        spool=spool,
        tls=tls,
        addressbook=book,
        metrics=p.metrics,
        on_stored=p.wake_pipeline,
    )
    # One acceptor: this process. Several: all in child processes, and this one keeps the
    # pipeline and the HTTP API, so that no acceptor carries more work than the others.
    pool = p.acceptors = AcceptorPool(
        settings, tls.cert_file, tls.key_file, 0 if p.processes == 1 else p.processes,
        on_wake=moved.set if mover is not None else p.wake_pipeline,
        policy=policy,
    )
    server = await start_listener(gateway) if p.processes == 1 else None

    async def stop_accepting() -> None:
        if server is not None:
            server.close()
        stopping_children = asyncio.create_task(pool.stop(timeout=_STOP_CHILDREN))
        await gateway.drain(_SHUTDOWN_GRACE)
        await stopping_children

    p.stack.push_async_callback(stop_accepting)
    if server is not None:  # the children follow the addresses themselves
        p.start_task(book.follow(), "addressbook")
    await pool.start()


async def _move_spooled(p: Platform, mover: SpoolMover, moved: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            await eventloop.wait_for(moved.wait(), _SPOOL_POLL)
        except TimeoutError:
            pass
        moved.clear()
        executor = p.pipeline.current_executor if p.pipeline is not None else None
        try:
            if await loop.run_in_executor(executor, mover.move_all):
                p.wake_pipeline()
        except Exception as e:  # noqa: BLE001 - the database may be briefly unavailable
            log.error("moving spooled messages failed, will retry: %s", e)
        # Under load the acceptors wake us every few ms: let their commits gather into
        # one move (each is a transaction and an fsync on the main database).
        await asyncio.sleep(_MOVE_GATHER)


async def build_sources(p: Platform) -> None:
    """The mailbox agent: IMAP sources' mail into a spool. On SQLite with the smtp role here,
    a spool file of its own (group commit, no wait for the pipeline's write lock), moved in by
    the smtp role's mover like an acceptor's; otherwise this process's spool (or one of its
    own), waking the pipeline like an SMTP message."""
    spool = p.spool
    on_stored = p.wake_pipeline
    file_engine: Engine | None = None
    if p.wake_mover is not None:
        file_engine = await asyncio.to_thread(
            open_spool_file, fetcher_spool_file(p.settings.data_dir))
        p.stack.callback(file_engine.dispose)
        spool = None
        on_stored = p.wake_mover
    if spool is None:
        spool = Spool(file_engine or p.engine, on_commit=p.metrics.on_commit)
        spool.start()
        p.stack.push_async_callback(asyncio.to_thread, spool.close)
    metrics = SourceMetrics(p.metrics.registry, lambda: sources_by_state(p.engine))
    p.fetcher = Fetcher(p.settings, p.engine, spool, on_stored=on_stored, metrics=metrics,
                        spool_engine=file_engine)
    p.start_task(p.fetcher.run(), "sources")


async def build_web(p: Platform) -> None:
    """The HTTP API; raises SystemExit when its listener cannot start."""
    pool = p.acceptors

    def exposition() -> bytes:
        return p.metrics.exposition(list(pool.snapshots.values()) if pool is not None else [])

    app = create_app(
        p.engine,
        p.metrics,
        on_addresses_changed=p.addresses_changed,
        exposition=exposition,
        settings=p.settings,
        on_outbound_queued=p.wake_delivery,
        enqueue_hooks=p.outbound.enqueue_hooks,
    )
    host, port = parse_hostport(p.settings.http.listen)
    web = p.web = _WebServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            server_header=False,
        )
    )
    task = asyncio.create_task(web.serve(), name="http")

    async def stop_web() -> None:
        web.should_exit = True
        with contextlib.suppress(Exception):
            await eventloop.wait_for(asyncio.shield(task), _STOP_WEB)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    p.stack.push_async_callback(stop_web)
    while not web.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.01)
    if task.done():
        with contextlib.suppress(BaseException):
            task.result()
        raise SystemExit(f"HTTP listener on {p.settings.http.listen} did not start")


@contextlib.asynccontextmanager
async def build_platform(
    settings: Settings, roles: Sequence[Role] | None = None
) -> AsyncIterator[Platform]:
    """Start the parts of `roles` (default: `server.roles`); stop them all on leaving.

    A step that fails (a port in use, a database that cannot be reached) unwinds the steps
    before it, then the error propagates."""
    wanted = parse_roles(roles if roles is not None else settings.server.roles)
    if "smtp" in wanted:
        check_listen_address(settings.inbound.listen, "SMTP", "--smtp-listen or [inbound] listen")
    if "web" in wanted:
        check_listen_address(settings.http.listen, "HTTP", "--http-listen or [http] listen")
    async with contextlib.AsyncExitStack() as stack:
        engine, metrics = await build_storage(settings, stack)
        p = Platform(
            settings=settings,
            roles=wanted,
            engine=engine,
            metrics=metrics,
            outbound=build_outbound(settings),
            stack=stack,
            processes=acceptor_processes(settings) if "smtp" in wanted else 0,
        )
        # The pipeline and delivery first: the listener wakes them from its first message.
        if "pipeline" in wanted:
            await build_pipeline(p)
        if "delivery" in wanted:
            await build_delivery(p)
        if "smtp" in wanted:
            await build_smtp(p)
        if "web" in wanted:
            await build_web(p)
        if "fetch" in wanted:
            await build_sources(p)
        yield p
