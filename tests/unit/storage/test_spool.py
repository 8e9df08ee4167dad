"""The spool on real SQLite and PostgreSQL: durability contract, group commit, failure paths."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text

from mailcase.errors import SpoolCommitError, StorageError
from mailcase.storage import db, emaillog, messages
from mailcase.storage.models import email_log, inbound_messages
from mailcase.storage.spool import LogEntry, Spool

from .helpers import accepted_reply, make_message


class Commits:
    """on_commit recorder."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []
        self.lock = threading.Lock()

    def __call__(self, batch_size: int, seconds: float) -> None:
        with self.lock:
            self.calls.append((batch_size, seconds))

    @property
    def sizes(self) -> list[int]:
        with self.lock:
            return [n for n, _ in self.calls]


@pytest.fixture
def commits() -> Commits:
    return Commits()


@pytest.fixture
def spool(db_engine: Engine, commits: Commits) -> Iterator[Spool]:
    s = Spool(db_engine, on_commit=commits)
    s.start()
    yield s
    s.close()


def _count(engine: Engine, table: object = inbound_messages) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def _log_rows(engine: Engine) -> list[tuple[str | None, str]]:
    with engine.connect() as conn:
        stmt = select(email_log.c.queue_id, email_log.c.outcome).order_by(email_log.c.id)
        rows = conn.execute(stmt)
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_store_then_read_back(spool: Spool, db_engine: Engine, commits: Commits) -> None:
    msg = make_message(rcpt_to=("a@example.test", "b@example.test"), smtputf8=True)
    await spool.store(msg, *accepted_reply(msg))
    # Durable on return: a fresh connection sees both rows.
    stored = messages.get_message(db_engine, msg.queue_id)
    assert stored is not None
    assert stored.content == bytes(msg.content)
    assert stored.rcpt_to == ("a@example.test", "b@example.test")
    assert stored.received_at == msg.received_at
    assert (stored.state, stored.attempts, stored.error) == ("received", 0, None)
    assert (stored.tls_version, stored.tls_cipher, stored.tls_bits) == (
        "TLSv1.3", "TLS_AES_256_GCM_SHA384", 256)
    assert stored.smtputf8 is True and stored.requiretls is False
    assert stored.message_id == "<m@example.test>"
    assert _log_rows(db_engine) == [(msg.queue_id, "accepted")]
    assert commits.sizes == [1]


async def test_the_accepted_entry_carries_the_message_facts_and_the_reply(
    spool: Spool, db_engine: Engine
) -> None:
    """SQLite copies the entry from the message row in SQL, PostgreSQL builds it in Python:
    both give the same row, with the peer's text cleaned like the message's."""
    msg = make_message(rcpt_to=("a@example.test", "b@example.test"), requiretls=True,
                       helo="bad\x00helo", message_id="<" + "x" * 600 + ">")
    await spool.store(msg, 250, "2.0.0 OK: queued as " + msg.queue_id)
    (row,) = emaillog.query(db_engine, queue_id=msg.queue_id)
    assert row["time"] == msg.received_at
    assert (row["direction"], row["outcome"]) == ("inbound", "accepted")
    assert (row["reply_code"], row["reply_text"], row["reason"]) == (
        250, "2.0.0 OK: queued as " + msg.queue_id, None)
    assert (row["client_ip"], row["helo"], row["mail_from"]) == (
        msg.client_ip, "bad\ufffdhelo", msg.mail_from)
    assert row["rcpt_to"] == ["a@example.test", "b@example.test"]
    assert (row["tls_version"], row["tls_cipher"], row["requiretls"]) == (
        "TLSv1.3", "TLS_AES_256_GCM_SHA384", True)
    assert row["size"] == msg.size
    assert row["message_id"] == "<" + "x" * 499  # the message row's cut (MESSAGE_ID_MAX)
    assert emaillog.query(db_engine, address="b@example.test", outcome="accepted") == [row]


async def test_log_is_written_with_the_next_commit_and_on_close(
    db_engine: Engine, commits: Commits
) -> None:
    s = Spool(db_engine, on_commit=commits)
    rejected = LogEntry(time=datetime.now(UTC), outcome="rejected", reply_code=550,
                        mail_from="x@example.org", rcpt_to=("nobody@example.test",))
    s.log(rejected)  # queued before start: written once the writer runs
    s.start()
    msg = make_message()
    s.log(rejected)
    await s.store(msg, *accepted_reply(msg))
    s.log(rejected)
    s.close()
    s.close()  # idempotent
    outcomes = [o for _, o in _log_rows(db_engine)]
    assert sorted(outcomes) == ["accepted", "rejected", "rejected", "rejected"]
    with pytest.raises(SpoolCommitError):
        await s.store(make_message(), *accepted_reply(msg))
    s.log(rejected)  # after close: dropped with a warning, no exception


def test_close_without_start_writes_queued_log_entries(db_engine: Engine) -> None:
    s = Spool(db_engine)
    s.log(LogEntry(time=datetime.now(UTC), outcome="rejected"))
    s.close()
    s.close()
    assert _count(db_engine, email_log) == 1


async def test_store_before_start_is_refused(db_engine: Engine) -> None:
    s = Spool(db_engine)
    msg = make_message()
    with pytest.raises(SpoolCommitError):
        await s.store(msg, *accepted_reply(msg))
    s.start()
    with pytest.raises(StorageError):
        s.start()
    s.close()


async def test_200_concurrent_stores_share_few_commits(
    spool: Spool, db_engine: Engine, commits: Commits
) -> None:
    msgs = [make_message() for _ in range(200)]
    await asyncio.gather(*(spool.store(m, *accepted_reply(m)) for m in msgs))
    assert _count(db_engine) == 200
    assert _count(db_engine, email_log) == 200
    assert sum(commits.sizes) == 200
    assert len(commits.sizes) <= 20, commits.sizes  # group commit, not one commit per message


async def test_one_bad_message_fails_alone(
    db_engine: Engine, commits: Commits
) -> None:
    """A duplicate queue id in a batch: that store() fails, the others and the logs commit."""
    in_first = threading.Event()
    gate = threading.Event()

    def on_commit(n: int, seconds: float) -> None:
        commits(n, seconds)
        if len(commits.calls) == 1:
            in_first.set()
            gate.wait(10)  # hold the writer so that the next batch gathers everything below

    s = Spool(db_engine, on_commit=on_commit)
    s.start()
    try:
        first = make_message()
        t_first = asyncio.create_task(s.store(first, *accepted_reply(first)))
        assert await asyncio.to_thread(in_first.wait, 10)
        good = [make_message() for _ in range(8)]
        dup = make_message(first.queue_id)
        batch = [*good[:4], dup, *good[4:]]
        tasks = [asyncio.create_task(s.store(m, *accepted_reply(m))) for m in batch]
        s.log(LogEntry(time=datetime.now(UTC), outcome="rejected", reply_code=550))
        await asyncio.sleep(0.05)  # every store() has queued its message
        gate.set()
        await t_first
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        gate.set()
        s.close()
    assert isinstance(results[4], SpoolCommitError)
    assert [r for i, r in enumerate(results) if i != 4] == [None] * 8
    assert _count(db_engine) == 9
    rows = _log_rows(db_engine)
    assert sorted(o for _, o in rows) == ["accepted"] * 9 + ["rejected"]
    assert [q for q, o in rows if o == "accepted"].count(first.queue_id) == 1
    # first commit, then the failed batch retried one by one (8 messages, then the log entry)
    assert commits.sizes == [1] + [1] * 8 + [0]


@pytest.mark.parametrize("bad", ["naive-time", "nul-in-text"])
async def test_bad_values(spool: Spool, db_engine: Engine, bad: str) -> None:
    if bad == "naive-time":
        msg = make_message(received_at=datetime(2026, 1, 1))
        with pytest.raises(SpoolCommitError):
            await spool.store(msg, *accepted_reply(make_message()))
        return
    # NUL and lone surrogates would make PostgreSQL refuse the row: they are replaced instead.
    msg = make_message(helo="bad\x00helo", mail_from="x\udcff@example.org",
                       message_id="<" + "x" * 5000 + ">")
    await spool.store(msg, *accepted_reply(msg))
    stored = messages.get_message(db_engine, msg.queue_id)
    assert stored is not None
    assert stored.helo == "bad\ufffdhelo"
    assert stored.mail_from == "x?@example.org"
    assert stored.message_id is not None and len(stored.message_id) == 500


async def test_locked_database_fails_within_busy_timeout_and_recovers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine, other = db.make_engine(url, busy_timeout_ms=300), db.make_engine(url)
    db.upgrade(engine)
    s = Spool(engine)
    s.start()
    try:
        with db.begin_write(other):  # another process holds the write lock
            msg = make_message()
            started = time.monotonic()
            with pytest.raises(SpoolCommitError, match="locked"):
                await asyncio.wait_for(s.store(msg, *accepted_reply(msg)), 10)
            assert time.monotonic() - started < 5
        msg = make_message()
        await asyncio.wait_for(s.store(msg, *accepted_reply(msg)), 10)
        assert _count(engine) == 1
    finally:
        s.close()
        engine.dispose()
        other.dispose()


async def test_missing_table_fails_every_message_at_once(
    spool: Spool, db_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database-wide error fails the whole batch instead of retrying each message (also
    when the raw SQLite path raises sqlite3's own, unwrapped error)."""
    one_by_one: list[int] = []
    original = Spool._commit_one_by_one

    def spy(self: Spool, pending: list, logs: list) -> None:
        one_by_one.append(len(pending))
        original(self, pending, logs)

    monkeypatch.setattr(Spool, "_commit_one_by_one", spy)
    with db.begin_write(db_engine) as conn:
        # Renamed rather than dropped: feature tables reference it.
        conn.execute(text("ALTER TABLE inbound_messages RENAME TO inbound_messages_gone"))
    msgs = [make_message() for _ in range(20)]
    results = await asyncio.wait_for(
        asyncio.gather(*(spool.store(m, *accepted_reply(m)) for m in msgs),
                       return_exceptions=True),
        30,
    )
    assert all(isinstance(r, SpoolCommitError) for r in results)
    assert one_by_one == []


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, to fill up; skipped where mounting is not allowed."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_disk_full_fails_then_recovers(tiny_fs: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tiny_fs / 'mail.db'}")
    s = Spool(engine)
    try:
        db.upgrade(engine)
        s.start()
        msg = make_message()
        await s.store(msg, *accepted_reply(msg))
        filler = tiny_fs / "filler"
        with filler.open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        big = make_message(content=bytearray(os.urandom(512 * 1024)))
        with pytest.raises(SpoolCommitError):
            await asyncio.wait_for(s.store(big, *accepted_reply(big)), 30)
        filler.unlink()
        await asyncio.wait_for(s.store(big, *accepted_reply(big)), 30)
        assert _count(engine) == 2
    finally:
        s.close()
        engine.dispose()


@pytest.mark.postgres
async def test_postgresql_read_only_then_writable(
    pg_server: object, pg_fresh_url: str
) -> None:
    from tests.support.postgres import PostgresServer

    assert isinstance(pg_server, PostgresServer)
    dbname = pg_fresh_url.rsplit("/", 1)[1]
    engine = db.make_engine(pg_fresh_url)
    db.upgrade(engine)
    admin = db.make_engine(pg_server.url())
    s = Spool(engine)
    s.start()

    def admin_sql(sql: str) -> None:
        with admin.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text(sql))

    kick = (f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()")
    try:
        msg = make_message()
        await s.store(msg, *accepted_reply(msg))
        admin_sql(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
        admin_sql(kick)
        msg = make_message()
        with pytest.raises(SpoolCommitError, match="read-only"):
            await asyncio.wait_for(s.store(msg, *accepted_reply(msg)), 30)
        admin_sql(f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only')
        admin_sql(kick)
        await asyncio.wait_for(s.store(msg, *accepted_reply(msg)), 30)
        assert _count(engine) == 2
    finally:
        s.close()
        engine.dispose()
        admin.dispose()


@pytest.mark.postgres
async def test_postgresql_database_gone_fails_fast(pg_server: object, pg_fresh_url: str) -> None:
    from tests.support.postgres import PostgresServer

    assert isinstance(pg_server, PostgresServer)
    engine = db.make_engine(pg_fresh_url)
    db.upgrade(engine)
    s = Spool(engine)
    s.start()
    try:
        msg = make_message()
        await s.store(msg, *accepted_reply(msg))
        pg_server.drop_database(pg_fresh_url.rsplit("/", 1)[1])
        msg = make_message()
        with pytest.raises(SpoolCommitError):
            await asyncio.wait_for(s.store(msg, *accepted_reply(msg)), 30)
    finally:
        s.close()
        engine.dispose()


async def test_35_mb_message_round_trip(spool: Spool, db_engine: Engine) -> None:
    content = bytearray(os.urandom(35 * 1024 * 1024))
    msg = make_message(content=content)
    await spool.store(msg, *accepted_reply(msg))
    stored = messages.get_message(db_engine, msg.queue_id)
    assert stored is not None
    assert stored.size == len(content)
    assert stored.content == content


async def test_cancelled_store_does_not_break_the_spool(spool: Spool, db_engine: Engine) -> None:
    msgs = [make_message() for _ in range(20)]
    tasks = [asyncio.create_task(spool.store(m, *accepted_reply(m))) for m in msgs]
    await asyncio.sleep(0)
    tasks[0].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    msg = make_message()
    await spool.store(msg, *accepted_reply(msg))
    # The cancelled caller got no answer, but its message may well have been stored.
    assert 20 <= _count(db_engine) <= 21


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from mailcase.storage.db import make_engine
    from mailcase.storage.spool import Spool
    from tests.unit.storage.helpers import make_message, accepted_reply

    url, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    engine = make_engine(url)
    spool = Spool(engine)
    spool.start()

    async def main():
        msgs = [make_message(f"{prefix}{i:05d}") for i in range(n)]
        await asyncio.gather(*(spool.store(m, *accepted_reply(m)) for m in msgs))

    asyncio.run(main())
    spool.close()
    engine.dispose()
    """
)


def test_spools_in_several_processes_share_one_database(db_engine: Engine, db_url: str) -> None:
    root = Path(__file__).resolve().parents[3]
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, db_url, f"P{p}-", "300"], cwd=root,
                         stderr=subprocess.PIPE, text=True)
        for p in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert _count(db_engine) == 900
    assert _count(db_engine, email_log) == 900


async def test_failing_on_commit_callback_does_not_stop_the_spool(db_engine: Engine) -> None:
    def boom(n: int, seconds: float) -> None:
        raise RuntimeError("metrics broke")

    s = Spool(db_engine, on_commit=boom)
    s.start()
    try:
        for _ in range(2):
            msg = make_message()
            await asyncio.wait_for(s.store(msg, *accepted_reply(msg)), 10)
    finally:
        s.close()
    assert _count(db_engine) == 2


async def test_a_crashed_writer_fails_waiters_instead_of_hanging(
    db_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Spool(db_engine)

    def bug(*args: object) -> None:
        raise RuntimeError("bug in the writer")

    monkeypatch.setattr(s, "_commit_batch", bug)
    s.start()
    msg = make_message()
    with pytest.raises(SpoolCommitError, match="crashed"):
        await asyncio.wait_for(s.store(msg, *accepted_reply(msg)), 10)
    with pytest.raises(SpoolCommitError, match="not running"):
        await s.store(msg, *accepted_reply(msg))
    s.close()


async def test_big_and_small_messages_in_one_batch_keep_their_own_content(
    db_engine: Engine, commits: Commits
) -> None:
    """Contents are streamed into the blob of their own row, whatever the batch's order.

    On SQLite `message_pk` is not the rowid (BIGINT PRIMARY KEY is no rowid alias), and in a
    batch the small contents are inserted after the big ones are streamed, so the rowid of a
    streamed row differs from its message_pk.
    """
    s = Spool(db_engine, on_commit=commits)
    big = b"Subject: big\r\n\r\n" + b"b" * (3 * 1024 * 1024) + b"\r\n"
    small = b"Subject: small\r\n\r\nsmall\r\n"
    batch = [make_message(content=c) for c in (small, big, small, big, small, big)]
    s.start()
    held = threading.Event()

    def hold_write_lock() -> None:  # the writer waits for it while the stores queue up
        with db.write_lock(db_engine):
            held.set()
            time.sleep(0.5)

    blocker = threading.Thread(target=hold_write_lock)
    blocker.start()
    held.wait()
    try:
        await asyncio.gather(*(s.store(m, *accepted_reply(m)) for m in batch))
    finally:
        blocker.join()
        s.close()
    with db_engine.connect() as conn:
        for m in batch:
            pk = conn.execute(
                select(inbound_messages.c.id).where(inbound_messages.c.queue_id == m.queue_id)
            ).scalar_one()
            assert messages.load_content(conn, pk) == m.content
    # ... in the batch, not by falling back to a transaction per message
    assert len(commits.calls) <= 2, commits.sizes


async def test_big_message_after_a_purged_content_row(db_engine: Engine) -> None:
    """A content row may be gone (purged) while its message row stays: then the rowids of
    `inbound_contents` no longer follow the message ids, and streaming must still write
    into the new message's own row."""
    s = Spool(db_engine)
    s.start()
    try:
        first, second = make_message(), make_message()
        for m in (first, second):
            await s.store(m, *accepted_reply(m))
        with db.begin_write(db_engine) as conn:
            conn.execute(text(
                "DELETE FROM inbound_contents WHERE message_pk = "
                "(SELECT id FROM inbound_messages WHERE queue_id = :q)"
            ), {"q": second.queue_id})
        big = make_message(content=b"Subject: big\r\n\r\n" + b"z" * (2 * 1024 * 1024) + b"\r\n")
        await s.store(big, *accepted_reply(big))
    finally:
        s.close()
    stored = messages.get_message(db_engine, big.queue_id)
    assert stored is not None and stored.content == big.content
    assert messages.get_message(db_engine, first.queue_id).content == first.content  # type: ignore[union-attr]
