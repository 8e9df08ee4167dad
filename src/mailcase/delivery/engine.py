"""The delivery engine: takes messages from the outbound queue and delivers them.

Runs in `mailcase serve` beside the pipeline:
``DeliveryEngine(settings, engine, metrics, hooks=build_outbound(settings).delivery)``,
``await run()``; ``wake()`` after an enqueue (the API calls it through
``ApiContext.on_outbound_queued``), else the queue is polled every ``delivery.poll_interval``.

One round:

1. **Claim** (`outbound.queue.claim.claim`): due messages get an "inflight" attempt row per pending
   recipient and move their next attempt a lease ahead, in one transaction, *before* any
   connection is opened.
2. **Route** each pending recipient: the first matching Email Relay filter, else the MX hosts
   of its domain. Recipients of one message going the same way form one *job*; one connection
   carries a job's recipients in one transaction (and then the next job for that destination:
   connections are kept open for up to ``delivery.messages_per_connection`` messages).
3. **Deliver** through `mailcase.delivery.client`: every recipient ends as Delivered,
   Transient or Permanent with the TLS facts. At most ``max_per_destination`` connections per
   destination and ``max_connections`` in all.
4. **Record** the results as soon as they arrive (`outbound.queue.claim.record`, batched by one
   writer task: whatever arrived during the previous write goes in the next).

Delivery is **at least once**. A crash between the remote server's 250 and the commit of that
result leaves the attempt "inflight"; it is retried after a restart (SQLite: at once;
PostgreSQL: when the claim lease ends), which sends that message again. That window is the only
source of duplicates: results are written right after each reply, never at the end of a batch,
and senders pause while more than `_MAX_UNRECORDED` results wait to be written, which bounds
the duplicates a crash can cause (to that many plus one message per open connection).
Nothing is ever lost: a message leaves the queue only when every recipient is final.

Hooks into DKIM signing and bounce handling arrive as `mailcase.delivery.hooks.DeliveryHooks`
(built by `mailcase.platform.build_outbound`: DKIM signing, VERP return path, a DSN on permanent
failure); on a signing error the message goes unsigned (logged).

Deliverability access level (``delivery.access_level``): mail it keeps back is set "held" and
released (due at once) when the level allows it again; see `outbound.queue.claim.release_held`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Engine

from mailcase import eventloop, maillog
from mailcase.config import Settings
from mailcase.delivery.client import (
    Delivered,
    Permanent,
    Result,
    Session,
    SessionFailure,
    Target,
    Transient,
)
from mailcase.delivery.hooks import DeliveryHooks
from mailcase.delivery.relays import RelayInfo, RelayTable, load_table
from mailcase.delivery.route import RouteFailure, resolve_mx, resolve_relay
from mailcase.dns import Resolver
from mailcase.metrics import Metrics
from mailcase.outbound.queue import claim as queue_claim
from mailcase.outbound.queue.claim import (
    ClaimedMessage,
    ClaimedRecipient,
    Completion,
    RecipientResult,
)
from mailcase.outbound.retry import next_attempt
from mailcase.storage.models import utcnow
from mailcase.tls.outbound import mode_for_domain

__all__ = ["DeliveryEngine"]

log = logging.getLogger(__name__)

#: Seconds a stop waits for the delivery tasks to finish.
_STOP_GRACE = 10.0
#: Seconds an idle open connection waits for more mail to the same destination.
_LINGER = 0.5
#: Consecutive failed writes of the same results before they are left to the claim lease.
_MAX_WRITE_FAILURES = 5
#: Results waiting to be written before senders pause: a crash can only duplicate messages
#: whose 250 came in but whose result was not committed, so this bounds the duplicates.
_MAX_UNRECORDED = 64


@dataclass
class _Job:
    message: ClaimedMessage
    recipients: list[ClaimedRecipient]
    mail_from: str
    content: bytes


@dataclass
class _Destination:
    key: str
    domain: str
    relay: RelayInfo | None
    jobs: asyncio.Queue[_Job] = field(default_factory=asyncio.Queue)
    workers: int = 0


class DeliveryEngine:
    """Runs in `serve` beside the pipeline; `wake()` after something was enqueued."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        metrics: Metrics | None = None,
        *,
        hooks: DeliveryHooks,
        clock: Callable[[], datetime] = utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings, self.engine, self.metrics = settings, engine, metrics
        self.clock, self.rand = clock, rand
        self.d = settings.delivery
        self._wake = asyncio.Event()
        self.resolver = Resolver(settings.dns.nameservers, timeout=settings.dns.timeout)
        self.helo = self.d.helo_name or settings.server.hostname
        self._destinations: dict[str, _Destination] = {}
        self._remaining: dict[int, int] = {}  # message pk -> jobs not finished
        self._results: list[Completion] = []
        self._results_ready = asyncio.Event()
        self._claiming = False
        self._writing = False
        self._in_write = 0  # results in the write that is running
        self._written = asyncio.Event()  # set after every write
        self._connections = asyncio.Semaphore(self.d.max_connections)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sign = hooks.sign
        self._return_path = hooks.return_path
        self._on_failure = hooks.on_permanent_failure
        self.delivered = 0  # counters for tests and the benchmark
        self.recorded = 0

    def wake(self) -> None:
        """Called on the event loop after an enqueue."""
        self._wake.set()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until cancelled."""
        if self.engine.dialect.name == "sqlite":
            n = await asyncio.to_thread(queue_claim.recover_inflight, self.engine)
            if n:
                log.info("delivery: %d message(s) were in flight at the last stop; retrying", n)
        await asyncio.to_thread(queue_claim.release_held, self.engine, self.d.access_level)
        writer = asyncio.create_task(self._writer(), name="delivery-writer")
        try:
            while True:
                claimed = await self.round()
                if claimed and len(self._remaining) < self.d.batch_size:
                    continue  # more may be due
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await eventloop.wait_for(self._wake.wait(), self.d.poll_interval)
        finally:
            writer.cancel()
            for t in list(self._tasks):
                t.cancel()
            # Bounded: a stop must never hang on a worker that does not finish.
            _done, stuck = await asyncio.wait([writer, *self._tasks], timeout=_STOP_GRACE)
            if stuck:
                log.warning("delivery: %d task(s) did not stop within %.0f s", len(stuck),
                            _STOP_GRACE)
            # Results that arrived but were not written: write them now (best effort), so a
            # clean stop leaves as little as possible "inflight".
            if self._results:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self._write, self._results)

    async def round(self) -> int:
        """Claim what is due (up to the free capacity) and start delivering it."""
        room = self.d.batch_size - len(self._remaining)
        if room <= 0:
            return 0
        self._claiming = True
        try:
            return await self._claim_and_dispatch(room)
        finally:
            self._claiming = False

    async def _claim_and_dispatch(self, room: int) -> int:
        try:
            claimed = await asyncio.to_thread(
                queue_claim.claim, self.engine, limit=room, lease=self.d.claim_lease,
                access_level=self.d.access_level, now=self.clock(),
                exclude=list(self._remaining),
            )
            if not claimed:
                return 0
            table = await asyncio.to_thread(load_table, self.engine, self.settings)
        except Exception:
            log.exception("delivery: claiming from the outbound queue failed; retrying")
            await asyncio.sleep(self.d.poll_interval)
            return 0
        prepared = [(m.content, m.mail_from) for m in claimed]
        if self._sign is not None or self._return_path is not None:
            # The hooks may read the database (keys): in a thread, never on the event loop.
            prepared = await asyncio.to_thread(lambda: [self._prepare(m) for m in claimed])
        for msg, (content, mail_from) in zip(claimed, prepared, strict=True):
            self._dispatch(msg, table, content, mail_from)
        return len(claimed)

    @property
    def busy(self) -> bool:
        """Something claimed is not finished or not recorded yet."""
        return bool(self._claiming or self._writing or self._remaining or self._results)

    # -- routing ----------------------------------------------------------------------------

    def _dispatch(self, msg: ClaimedMessage, table: RelayTable, content: bytes, mail_from: str
                  ) -> None:
        if not msg.recipients:
            self._remaining[msg.pk] = 1
            self._complete(msg, [])
            return
        sender_domain = msg.mail_from.rpartition("@")[2].lower()
        groups: dict[str, tuple[str, RelayInfo | None, list[ClaimedRecipient]]] = {}
        for rc in msg.recipients:
            relay = table.select(sender_domain, rc.domain)
            key = f"relay:{relay.id}" if relay is not None else f"mx:{rc.domain}"
            groups.setdefault(key, (rc.domain, relay, []))[2].append(rc)
        self._remaining[msg.pk] = len(groups)
        for key, (domain, relay, rcpts) in groups.items():
            dest = self._destinations.get(key)
            if dest is None:
                dest = self._destinations[key] = _Destination(key, domain, relay)
            dest.relay = relay  # the newest snapshot
            dest.jobs.put_nowait(_Job(msg, rcpts, mail_from, content))
            self._spawn(dest)

    def _prepare(self, msg: ClaimedMessage) -> tuple[bytes, str]:
        """The content to send (DKIM-signed) and the MAIL FROM (VERP), through the hooks."""
        content, mail_from = msg.content, msg.mail_from
        if self._sign is not None:
            try:
                signed = self._sign(self.engine, self.settings, msg.mail_from, content)
                if isinstance(signed, bytes | bytearray):
                    content = bytes(signed)
            except Exception:
                log.exception("delivery: DKIM signing of %s failed; sent unsigned", msg.queue_id)
        if self._return_path is not None and mail_from:
            try:
                mail_from = str(self._return_path(self.settings, msg.queue_id, mail_from))
            except Exception:
                log.exception("delivery: return path for %s failed; using the sender",
                              msg.queue_id)
        return content, mail_from

    def _spawn(self, dest: _Destination) -> None:
        while dest.workers < self.d.max_per_destination and dest.workers < dest.jobs.qsize():
            dest.workers += 1
            task = asyncio.create_task(self._worker(dest), name=f"deliver {dest.key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _targets(self, dest: _Destination) -> list[Target] | RouteFailure:
        if dest.relay is not None:
            return await resolve_relay(self.resolver, dest.relay)
        mode = mode_for_domain(self.d.tls_mode, self.d.tls_domains, dest.domain)
        return await resolve_mx(self.resolver, dest.domain, port=self.d.mx_port, tls_mode=mode)

    # -- delivering -------------------------------------------------------------------------

    async def _worker(self, dest: _Destination) -> None:
        session: Session | None = None
        try:
            while True:
                try:
                    job = dest.jobs.get_nowait()
                except asyncio.QueueEmpty:
                    if session is None or not session.alive:
                        return
                    try:  # keep an open connection a moment for the next claimed batch
                        job = await eventloop.wait_for(dest.jobs.get(), _LINGER)
                    except TimeoutError:
                        return
                if session is not None and (
                    not session.alive or session.sent >= self.d.messages_per_connection
                ):
                    await session.close()
                    self._connections.release()
                    session = None
                if session is None:
                    try:
                        opened = await self._open(dest)
                    except Exception as e:  # a bug or an unclassified lookup error
                        log.exception("delivery: opening a session to %s failed", dest.key)
                        opened = RouteFailure(False, None, f"4.3.0 internal error: {e}")
                    if not isinstance(opened, Session):
                        # The destination cannot be reached now: fail this job and every one
                        # waiting for it with the same reason (Postfix's "dead destination").
                        self._fail_job(job, opened)
                        while not dest.jobs.empty():
                            self._fail_job(dest.jobs.get_nowait(), opened)
                        return
                    session = opened
                while len(self._results) + self._in_write >= _MAX_UNRECORDED:
                    self._written.clear()
                    await self._written.wait()
                try:
                    results = await session.send(
                        job.mail_from, [r.address for r in job.recipients], job.content
                    )
                except Exception as e:  # never leave a claimed job without a result
                    log.exception("delivery: sending %s failed", job.message.queue_id)
                    session.alive = False
                    self._fail_job(job, RouteFailure(False, None, f"4.3.0 internal error: {e}"))
                    continue
                self._finish_job(job, results)
        finally:
            dest.workers -= 1
            if session is not None:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # Stopping: close at once. A polite QUIT awaited here could outlive the
                    # stop (a peer that does not answer, a cancellation swallowed below us).
                    session.abort()
                else:
                    await session.close()
                self._connections.release()
            if dest.workers == 0 and dest.jobs.empty():
                self._destinations.pop(dest.key, None)

    async def _open(self, dest: _Destination) -> Session | Transient | Permanent | RouteFailure:
        targets = await self._targets(dest)
        if isinstance(targets, RouteFailure):
            return targets
        last: Transient | Permanent | None = None
        for target in targets:
            await self._connections.acquire()
            session = Session(
                target, helo=self.helo, ca_file=self.d.ca_file,
                connect_timeout=self.d.connect_timeout, command_timeout=self.d.command_timeout,
            )
            try:
                await session.open()
                return session
            except SessionFailure as e:
                self._connections.release()
                last = e.result
                if isinstance(last, Permanent) and last.stage == "connect":
                    return last  # a 5xx greeting: this destination does not want mail
            except BaseException:
                self._connections.release()
                raise
        assert last is not None
        return last

    def _fail_job(self, job: _Job, why: Transient | Permanent | RouteFailure) -> None:
        results: dict[str, Result]
        if isinstance(why, RouteFailure):
            fields: dict[str, Any] = {
                "code": why.code, "text": why.text, "host": None, "ip": None, "port": None,
                "tls": None, "relay": None, "tls_mode": None,
            }
            r: Result = (Permanent(stage="route", **fields) if why.permanent
                         else Transient(stage="route", **fields))
            results = {rc.address: r for rc in job.recipients}
        else:
            results = {rc.address: why for rc in job.recipients}
        self._finish_job(job, results)

    def _finish_job(self, job: _Job, results: dict[str, Result]) -> None:
        out: list[RecipientResult] = []
        for rc in job.recipients:
            res = results.get(rc.address)
            if res is None:  # pragma: no cover - the client answers for every recipient
                res = Transient(code=None, text="no result", host=None, ip=None, port=None,
                                tls=None, relay=None, tls_mode=None, stage="data")
            outcome = ("delivered" if isinstance(res, Delivered)
                       else "permanent" if isinstance(res, Permanent) else "transient")
            tls = res.tls
            out.append(RecipientResult(
                recipient=rc, outcome=outcome, stage=res.stage, code=res.code, text=res.text,
                remote_host=res.host, remote_ip=res.ip, remote_port=res.port, relay=res.relay,
                tls_mode=res.tls_mode,
                tls_version=tls.version if tls else None,
                tls_cipher=tls.cipher if tls else None,
                tls_verified=bool(tls and tls.verified),
                verified_by=tls.verified_by if tls else None,
                tls_fallback=res.tls_fallback,
                envelope_from=job.mail_from if res.host else None,
            ))
            if outcome == "delivered":
                self.delivered += 1
        self._complete(job.message, out)

    def _complete(self, msg: ClaimedMessage, results: list[RecipientResult]) -> None:
        left = self._remaining.get(msg.pk, 1) - 1
        final = left <= 0
        if final:
            self._remaining.pop(msg.pk, None)
        else:
            self._remaining[msg.pk] = left
        self._results.append(Completion(msg, tuple(results), final))
        self._results_ready.set()

    # -- recording --------------------------------------------------------------------------

    async def _writer(self) -> None:
        failures = 0
        while True:
            await self._results_ready.wait()
            self._results_ready.clear()
            batch, self._results = self._results, []
            if not batch:
                continue
            self._writing = True
            self._in_write = len(batch)
            try:
                await asyncio.to_thread(self._write, batch)
                failures = 0
            except Exception:
                failures += 1
                if failures >= _MAX_WRITE_FAILURES:
                    # Give these up: their attempts stay "inflight" and the claim lease makes
                    # them due again (at-least-once), rather than blocking every later result.
                    log.exception("delivery: recording %d result(s) failed %d times; they will "
                                  "be retried when their lease ends", len(batch), failures)
                    failures = 0
                else:
                    # Keep them and try again: a storage hiccup must not lose a result.
                    log.exception("delivery: recording %d result(s) failed; retrying",
                                  len(batch))
                    self._results[:0] = batch
                await asyncio.sleep(1.0)
                self._results_ready.set()
            else:
                if self._results:
                    self._results_ready.set()
                self._wake.set()  # capacity was freed
            finally:
                self._writing = False
                self._in_write = 0
                self._written.set()

    def _schedule(self, created_at: datetime, now: datetime, attempts: int) -> datetime | None:
        d = self.d
        return next_attempt(
            created_at=created_at, now=now, attempts=attempts, base=d.retry_base,
            cap=d.retry_max, jitter=d.retry_jitter, max_queue_time=d.max_queue_time,
            rand=self.rand,
        )

    def _bounce(self, conn: Connection, row: dict[str, Any], rcpts: list[dict[str, Any]],
                reply: str) -> None:
        if self._on_failure is not None:
            self._on_failure(conn, self.settings, row, rcpts, reply)

    def _write(self, batch: list[Completion]) -> None:
        done = queue_claim.record(
            self.engine, batch, schedule=self._schedule, on_bounce=self._bounce,
            now=self.clock(),
        )
        self.recorded += len(done)
        for d in done:
            r = d.result
            relay = (f"{r.remote_host}[{r.remote_ip}]:{r.remote_port}" if r.remote_host
                     else "none")
            if r.relay:
                relay = f"{r.relay}/{relay}"
            checked = "verified" if r.tls_verified else "unverified"
            tls = f"{r.tls_version}:{r.tls_cipher}:{checked}" if r.tls_version else (
                "plaintext-after-tls-failure" if r.tls_fallback else "plaintext")
            reply = f"{r.code or ''} {r.text}".strip() or "-"
            if r.stage and r.outcome != "delivered":
                reply = f"{r.stage}: {reply}"
            fn = {"sent": maillog.delivered, "deferred": maillog.deferred}.get(d.status,
                                                                             maillog.bounced)
            fn(d.queue_id, to=r.recipient.address, relay=relay, delay=d.delay,
               attempt=d.attempt, tls=tls, reply=reply)
