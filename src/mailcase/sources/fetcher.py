"""The running agent: one task per active mailbox source, started by the `fetch` role.

Exactly once (issue 19): for each batch of a folder,

1. the messages are stored through `Spool.store` (committed and fsynced, like a 250 after
   DATA), each under the queue id `plan.queue_id_for` derives from the source, UIDVALIDITY and
   UID; those the spool already holds (a re-fetch after a crash) are not stored again;
2. only then are they changed on the server (seen, moved or deleted);
3. only then is the folder's last UID recorded (every few seconds and at the end of a round,
   not after each batch: a lagging record costs only a re-fetch that step 1 finds).

On SQLite with the smtp role in the same process the spool is a file of the agent's own
(`storage.spoolfiles`, moved in like an acceptor's), so none of these steps waits for the
pipeline's write lock on the database.

A crash between any two steps makes the next round fetch the same UIDs again; step 1 finds
their queue ids and skips them, and the cases' dedupe key covers a UIDVALIDITY change. So a
message is never lost (the server copy stays until it is in the spool) and never makes a
second case.

Failures (wrong password, certificate refused, a vanished folder, a dropped connection) end
the source's connections and back off (`plan.backoff_delay`, reason in `source list` and the
email log); a source never reconnects in a tight loop. IDLE (RFC 2177) is used where the
server offers it, one connection per folder (`sources.idle_connections` at most); otherwise
the folders are polled every `sources.poll_interval`.

A message that cannot be taken (over `inbound.max_message_size`, or refused by the spool
itself, as opposed to a spool that cannot commit at all) does not block its folder: it is
recorded (email log, `source show`), moved to the source's `skip_to` folder or left where it
is, never changed otherwise, and the messages after it are taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import functools
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine, select

from mailcase import maillog
from mailcase.config import Settings
from mailcase.errors import SpoolCommitError
from mailcase.mime.headers import header_block, message_id
from mailcase.sources import store
from mailcase.sources.imap import Connection, Fetched, SourceError, connect
from mailcase.sources.metrics import SourceMetrics
from mailcase.sources.plan import (
    FolderState,
    backoff_delay,
    batches,
    queue_id_for,
    search_criteria,
    start_from,
    uids_to_take,
)
from mailcase.storage.models import inbound_messages, utcnow
from mailcase.storage.spool import LogEntry, Spool, SpooledMessage

__all__ = ["Fetcher", "envelope_sender", "source_reply_text"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_RESCAN = 2.0  # seconds between looks at the sources table (added, paused, removed)
_SIZES_AT_ONCE = 5000  # UIDs per RFC822.SIZE fetch
_RECORD_EVERY = 5.0  # seconds between records of a folder's last UID within one round
_IDS_AT_ONCE = 500  # queue ids per "already stored?" query (SQLite's bound-parameter limit)
_BATCH_BYTES = 32 * 1024 * 1024  # bodies held in memory per batch (a bigger message alone)
_RETURN_PATH = re.compile(rb"(?im)^return-path[ \t]*:[ \t]*<([^>\r\n]*)>")
_FROM = re.compile(rb"(?im)^from[ \t]*:[ \t]*((?:[^\r\n]|\r\n[ \t])*)")
# What a change of these columns means: reconnect with the new settings.
_CONNECTION_KEYS = ("host", "port", "security", "auth", "username", "secret", "folders",
                    "address", "after", "move_to", "paused", "trusted_authserv_ids", "skip_to")


def source_reply_text(name: str, folder: str, uidvalidity: int, uid: int) -> str:
    """The email log's reply text of a fetched message: where it came from."""
    return f"fetched from source {name} folder {folder!r} uidvalidity {uidvalidity} uid {uid}"


def envelope_sender(content: bytes) -> str:
    """The envelope sender the mailbox server recorded (Return-Path), else the From address."""
    head = header_block(content)
    m = _RETURN_PATH.search(head)
    if m is not None:
        return m.group(1).decode("utf-8", "replace").strip()
    m = _FROM.search(head)
    if m is None:
        return ""
    value = re.sub(rb"\r\n[ \t]+", b" ", m.group(1)).decode("utf-8", "replace")
    return email.utils.parseaddr(value)[1]


def _received(row: dict[str, Any], conn: Connection, hostname: str, queue_id: str,
              uid: int, when: dt.datetime) -> bytes:
    tls = conn.tls
    using = f"\r\n\t(using {tls.version} with cipher {tls.cipher})" if tls else " (plaintext)"
    text = (f"Received: from {row['host']} ([{conn.server_ip}]) (mailbox source "
            f"{row['name']}, uid {uid}){using}\r\n\tby {hostname} (mailcase) id {queue_id}"
            f"\r\n\tfor <{row['address']}>; {email.utils.format_datetime(when)}\r\n")
    return text.encode("utf-8", "replace")


class _Stop(Exception):  # noqa: N818 - an instruction to end quietly, not an error
    """The source was paused, removed or changed: end this connection quietly."""


class Fetcher:
    """Runs every active source; `run()` until cancelled."""

    def __init__(self, settings: Settings, engine: Engine, spool: Spool,
                 on_stored: Callable[[], None], metrics: SourceMetrics | None = None,
                 spool_engine: Engine | None = None) -> None:
        """`spool_engine`: the spool file `spool` writes to, when not the main database
        (moved in by the smtp role's mover, `storage.spoolfiles`)."""
        self.metrics = metrics
        self.spool_engine = spool_engine
        self.settings = settings
        self.engine = engine
        self.spool = spool
        self.on_stored = on_stored
        self._tasks: dict[int, tuple[asyncio.Task[None], dict[str, Any]]] = {}

    async def run(self) -> None:
        try:
            while True:
                try:
                    rows = await asyncio.to_thread(store.list_sources, self.engine, private=True)
                except Exception as e:  # noqa: BLE001 - the database may be briefly unavailable
                    log.error("reading mailbox sources failed, will retry: %s", e)
                    rows = None
                if rows is not None:
                    self._reconcile(rows)
                await asyncio.sleep(_RESCAN)
        finally:
            tasks = [t for t, _ in self._tasks.values()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _reconcile(self, rows: list[dict[str, Any]]) -> None:
        """Start a task for each active source; stop those removed, paused or changed."""
        wanted = {r["id"]: r for r in rows if not r["paused"]}
        for sid, (task, seen) in list(self._tasks.items()):
            row = wanted.get(sid)
            changed = row is None or any(row[k] != seen[k] for k in _CONNECTION_KEYS)
            if changed or task.done():
                task.cancel()
                del self._tasks[sid]
        for sid, row in wanted.items():
            if sid not in self._tasks:
                task = asyncio.create_task(self._source(row), name=f"source-{sid}")
                self._tasks[sid] = (task, row)

    async def _source(self, row: dict[str, Any]) -> None:
        """Connect, take mail, wait for more; on any failure back off and start again."""
        while True:
            wait = _seconds_until(row.get("next_attempt_at"))
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                async with contextlib.AsyncExitStack() as links:
                    await self._session(row, links)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - every failure backs off, visibly
                reason = str(e) if isinstance(e, SourceError) else f"{type(e).__name__}: {e}"
                if self.metrics is not None:
                    kind = e.kind if isinstance(e, SourceError) else (
                        "connection" if isinstance(e, OSError) else "server")
                    self.metrics.failures.labels(kind=kind).inc()
                row = await self._failed(row, reason)

    async def _connect(self, row: dict[str, Any], links: contextlib.AsyncExitStack) -> _Link:
        """One more logged-in connection of this source, closed when `links` is left."""
        link = _Link(f"mailcase-source-{row['id']}")
        links.push_async_callback(link.close)
        secret = store.open_secret(self.settings, row["name"], row["secret"])
        s = self.settings.sources
        link.conn = await link.call(functools.partial(
            connect, host=row["host"], port=row["port"], security=row["security"],
            username=row["username"], secret=secret, auth=row["auth"],
            ca_file=s.ca_file or self.settings.delivery.ca_file, timeout=s.timeout))
        return link

    async def _failed(self, row: dict[str, Any], reason: str) -> dict[str, Any]:
        s = self.settings.sources
        delay = backoff_delay(int(row.get("failures") or 0) + 1, s.retry_base, s.retry_max)
        retry_at = utcnow() + dt.timedelta(seconds=delay)
        await asyncio.to_thread(store.record_failure, self.engine, row["id"], reason, retry_at)
        log.warning("mailbox source %s: %s; retrying in %.0f s", row["name"], reason, delay)
        maillog.event("fetch", None, source=row["name"], status="deferred", reason=reason,
                      retry=f"{delay:.0f}s")
        self.spool.log(LogEntry(time=utcnow(), queue_id=None, client_ip=None,
                                helo=row["host"], rcpt_to=(row["address"],),
                                outcome="deferred",
                                reason=f"mailbox source {row['name']}: {reason}"))
        return {**row, "failures": int(row.get("failures") or 0) + 1, "next_attempt_at": retry_at}

    async def _session(self, row: dict[str, Any], links: contextlib.AsyncExitStack) -> None:
        """Take what is there, then wait for more: with IDLE (RFC 2177) where the server
        offers it, one connection per folder (IDLE watches the selected folder only), at most
        `sources.idle_connections`; folders past that, and every folder of a server without
        IDLE, are polled every `sources.poll_interval` on one connection. NOTIFY (RFC 5465)
        would need one connection only, but IMAPClient does not speak it and few servers do."""
        s = self.settings.sources
        first = await self._connect(row, links)
        conn = first.connection
        folders: list[str] = list(row["folders"])
        if s.idle and conn.has(b"IDLE"):
            watched = folders[:s.idle_connections]
            if len(folders) > s.idle_connections:  # the last connection polls the rest
                watched = folders[:s.idle_connections - 1]
            polled = folders[len(watched):]
        else:
            watched, polled = [], folders
        idlers = [first] + [await self._connect(row, links) for _ in watched[1:]]
        poller = first if not watched else (
            await self._connect(row, links) if polled else None)
        for folder, link in [*zip(watched, idlers, strict=False),
                             *((f, poller) for f in polled if poller is not None)]:
            await self._sync(row, link, folder)
        # Logged in and looked into every folder: the source works.
        await asyncio.to_thread(store.record_ok, self.engine, row["id"],
                                "idle" if watched else "polling")
        row.update(failures=0, next_attempt_at=None)  # the caller's row: back-off anew
        waits = [self._idle(row, link, folder) for folder, link in zip(watched, idlers,
                                                                        strict=False)]
        if poller is not None and polled:
            waits.append(self._poll(row, poller, polled))
        # The first to fail ends them all (TaskGroup), and the source backs off with its
        # reason (not the group's).
        try:
            async with asyncio.TaskGroup() as group:
                for w in waits:
                    group.create_task(w)
        except ExceptionGroup as eg:
            raise eg.exceptions[0] from None

    async def _idle(self, row: dict[str, Any], link: _Link, folder: str) -> None:
        s = self.settings.sources
        while True:
            await link.call(link.connection.idle_wait, s.idle_restart, link.stop)
            await self._sync(row, link, folder)

    async def _poll(self, row: dict[str, Any], link: _Link, folders: list[str]) -> None:
        while True:
            await asyncio.sleep(self.settings.sources.poll_interval)
            for folder in folders:
                await self._sync(row, link, folder)

    async def _sync(self, row: dict[str, Any], link: _Link, folder: str) -> None:
        """Take every new message of `folder`, a batch at a time."""
        conn = link.connection
        uidvalidity, exists = await link.call(conn.select, folder)
        known = await asyncio.to_thread(store.folder_state, self.engine, row["id"], folder)
        last = start_from(known, uidvalidity)
        if known is None or known.uidvalidity != uidvalidity:
            if known is not None:
                log.warning("mailbox source %s folder %r: UIDVALIDITY changed, looking at "
                            "every message again (cases are not duplicated)", row["name"], folder)
            await asyncio.to_thread(store.save_folder_state, self.engine, row["id"], folder,
                                    FolderState(uidvalidity, last), 0)
        if not exists:
            return
        progress = _Progress(row["id"], folder, uidvalidity, last)
        batch = self.settings.sources.batch_size
        limit = self.settings.inbound.max_message_size
        while True:  # one SEARCH, then batches of its UIDs; again until nothing is new
            found = await link.call(conn.search, search_criteria(row["after"], last))
            pending = uids_to_take(found, last, len(found))
            if not pending:
                await self._record(progress, force=True)
                return
            for i in range(0, len(pending), _SIZES_AT_ONCE):
                sizes: dict[int, int] = await link.call(conn.sizes,
                                                        pending[i:i + _SIZES_AT_ONCE])
                big = {uid: size for uid, size in sizes.items() if size > limit}
                for uid, size in sorted(big.items()):  # as SMTP's 552: never stored, not lost
                    await self._skip(row, link, folder, uidvalidity, uid, size,
                                     f"{size} octets, over inbound.max_message_size ({limit})")
                takeable = {uid: size for uid, size in sizes.items() if uid not in big}
                await self._batches(row, link, progress,
                                    batches(takeable, batch, _BATCH_BYTES))
                # Also past UIDs gone since the SEARCH (expunged by someone else), and past
                # skipped ones (not tried again).
                done = pending[min(i + _SIZES_AT_ONCE, len(pending)) - 1]
                last = progress.last_uid = max(progress.last_uid, done)

    async def _record(self, p: _Progress, *, force: bool) -> None:
        """Record the last UID taken in the database: at the end of a round, and every
        `_RECORD_EVERY` seconds in between, not after every batch, where it waited for the
        pipeline's write lock (SQLite) every time. A record that lags only makes a crash
        re-fetch messages that are already in the spool: found there, not stored again."""
        if p.last_uid == p.saved_uid and not p.taken:
            return
        if not force and time.monotonic() - p.saved_at < _RECORD_EVERY:
            return
        await asyncio.to_thread(store.save_folder_state, self.engine, p.source_id, p.folder,
                                FolderState(p.uidvalidity, p.last_uid), p.taken)
        p.saved_uid, p.taken, p.saved_at = p.last_uid, 0, time.monotonic()

    async def _skip(self, row: dict[str, Any], link: _Link, folder: str, uidvalidity: int,
                    uid: int, size: int | None, reason: str) -> None:
        """A message that cannot be taken: recorded (email log, `source show`), moved to the
        source's skip folder if it has one, else left where it is; the next ones are taken."""
        moved_to = row.get("skip_to")
        if moved_to:
            await link.call(link.connection.after, "move", [uid], moved_to)
        await asyncio.to_thread(store.record_skipped, self.engine, row["id"], folder,
                                uidvalidity, uid, size, reason, moved_to)
        where = f"moved to {moved_to!r}" if moved_to else "left on the server"
        text = (f"mailbox source {row['name']}: message uid {uid} in {folder!r} not taken "
                f"({reason}); {where}")
        log.warning("%s", text)
        maillog.event("fetch", None, source=row["name"], folder=folder, status="skipped",
                      uid=str(uid), reason=reason)
        self.spool.log(LogEntry(time=utcnow(), queue_id=None, client_ip=None,
                                helo=row["host"], rcpt_to=(row["address"],), size=size,
                                outcome="rejected", reason=text))
        if self.metrics is not None:
            self.metrics.skipped.inc()

    async def _batches(self, row: dict[str, Any], link: _Link, progress: _Progress,
                       todo: list[list[int]]) -> None:
        """Each batch in turn, the next one's bodies fetched while this one is committed (the
        commit waits on the disk, the fetch on the network: overlapped, as SMTP sessions
        overlap the spool's commits). At most two batches are held in memory; the IMAP
        commands still go one after another on the connection's thread, so a batch is
        changed on the server only after its own commit."""
        conn = link.connection
        ahead: asyncio.Future[list[Fetched]] | None = None
        try:
            for k, uids in enumerate(todo):
                fetched = await (ahead if ahead is not None else link.call(conn.fetch, uids))
                ahead = None
                if k + 1 < len(todo):
                    ahead = asyncio.ensure_future(link.call(conn.fetch, todo[k + 1]))
                progress.taken += await self._batch(row, link, progress.folder,
                                                    progress.uidvalidity, fetched)
                progress.last_uid = max(progress.last_uid, *uids)
                await self._record(progress, force=False)
        finally:
            if ahead is not None:  # a batch failed: the one fetched ahead is dropped
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    async def _batch(self, row: dict[str, Any], link: _Link, folder: str,
                     uidvalidity: int, fetched: list[Fetched]) -> int:
        """Spool, then change on the server (then the caller records): the order that makes
        it exactly once. Returns how many messages were stored."""
        conn = link.connection
        taken, refused = await self._store(row, conn, folder, uidvalidity, fetched)
        for f, why in refused:
            await self._skip(row, link, folder, uidvalidity, f.uid, len(f.content), why)
        stored = [f.uid for f in fetched if f.uid not in {r.uid for r, _ in refused}]
        await link.call(conn.after, row["after"], stored, row["move_to"])
        return taken

    async def _store(self, row: dict[str, Any], conn: Connection, folder: str,
                     uidvalidity: int, fetched: list[Fetched]
                     ) -> tuple[int, list[tuple[Fetched, str]]]:
        """Store the batch in the spool: (how many were new, those the spool refused with
        why). Those the spool holds already (fetched before a crash) are skipped; when the
        spool could not commit at all, SourceError (nothing is changed on the server)."""
        if not fetched:
            return 0, []
        ids = {queue_id_for(row["token"], uidvalidity, f.uid): f for f in fetched}
        have = await asyncio.to_thread(self._stored, list(ids))
        hostname = self.settings.server.hostname
        tls = conn.tls
        waits = []
        trusted = tuple(row.get("trusted_authserv_ids") or ())
        for qid, f in ids.items():
            if qid in have:
                continue
            now = utcnow()
            content = _received(row, conn, hostname, qid, f.uid, now) + f.content
            msg = SpooledMessage(
                queue_id=qid, received_at=now, client_ip=conn.server_ip, helo=row["host"],
                mail_from=envelope_sender(f.content), rcpt_to=(row["address"],),
                tls_version=tls.version if tls else None,
                tls_cipher=tls.cipher if tls else None, tls_bits=tls.bits if tls else None,
                size=len(content), message_id=message_id(content), content=content,
                trusted_authserv_ids=trusted,
            )
            reply = source_reply_text(row["name"], folder, uidvalidity, f.uid)
            waits.append((msg, asyncio.ensure_future(self.spool.store(msg, 250, reply))))
        results = await asyncio.gather(*(w for _, w in waits), return_exceptions=True)
        failed = {m.queue_id: r for (m, _), r in zip(waits, results, strict=True)
                  if isinstance(r, BaseException)}
        refused: list[tuple[Fetched, str]] = []
        if failed:
            # A duplicate queue id means another process stored it meanwhile: that is fine.
            now_have = await asyncio.to_thread(self._stored, list(failed))
            lost = {q: e for q, e in failed.items() if q not in now_have}
            for qid, err in lost.items():
                if not (isinstance(err, SpoolCommitError) and err.refused):
                    raise SourceError(f"storing fetched mail failed ({err}); left on the "
                                      "server, will retry", "storage")
                refused.append((ids[qid], f"refused by the spool: {err}"))
            failed = {q: e for q, e in failed.items() if q not in now_have}
        stored = [m for m, _ in waits if m.queue_id not in failed]
        for msg in stored:
            maillog.event("fetch", msg.queue_id, source=row["name"], folder=folder,
                          status="accepted", size=msg.size, message_id=msg.message_id,
                          tls=f"{tls.version}:{tls.cipher}" if tls else "plaintext")
        if stored:
            if self.metrics is not None:
                self.metrics.taken.labels(tls="yes" if tls else "no").inc(len(stored))
            self.on_stored()
        return len(stored), refused

    def _stored(self, queue_ids: list[str]) -> set[str]:
        """Those of `queue_ids` stored already. The spool file first, then the database: the
        mover inserts into the database before it deletes from the file, so a message moved
        between the two looks is found by one of them."""
        q = inbound_messages.c.queue_id
        found: set[str] = set()
        for engine in (self.spool_engine, self.engine):
            if engine is None:
                continue
            with engine.connect() as c:
                for i in range(0, len(queue_ids), _IDS_AT_ONCE):
                    chunk = queue_ids[i:i + _IDS_AT_ONCE]
                    found.update(r[0] for r in c.execute(select(q).where(q.in_(chunk))))
        return found


@dataclass(slots=True)
class _Progress:
    """Where a round in one folder stands: the last UID taken, and what is recorded."""

    source_id: int
    folder: str
    uidvalidity: int
    last_uid: int
    saved_uid: int = -1
    taken: int = 0  # stored since the last record
    saved_at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.saved_uid = self.last_uid


class _Link:
    """One IMAP connection of a source with the thread it runs in (IMAPClient blocks), and
    the flag that ends its IDLE wait when the connection is to be closed."""

    def __init__(self, thread_name: str) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=thread_name)
        self.stop = threading.Event()
        self.conn: Connection | None = None

    @property
    def connection(self) -> Connection:
        assert self.conn is not None, "used before connected"
        return self.conn

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        self.stop.set()  # an IDLE wait in the thread ends within a tick
        try:
            if self.conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.call(self.conn.close))
        finally:
            self._executor.shutdown(wait=False)


def _seconds_until(when: dt.datetime | None) -> float:
    if when is None:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - utcnow()).total_seconds())
