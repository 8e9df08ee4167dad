"""Spool files (SQLite): acceptors commit to files of their own; the mover brings the rows in."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from mailcase.errors import SpoolCommitError
from mailcase.storage import db, messages
from mailcase.storage.models import email_log, inbound_messages, spool_transfers
from mailcase.storage.spool import Spool, SpooledMessage
from mailcase.storage.spoolfiles import (
    SpoolMover,
    drop_secondary_indexes,
    open_spool_file,
    spool_dir,
    spool_file,
)

from .helpers import accepted_reply, make_message


@pytest.fixture
def main(tmp_path: Path) -> Iterator[Engine]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'mailcase.db'}")
    db.upgrade(engine)
    yield engine
    engine.dispose()


def _count(engine: Engine, table: object = inbound_messages) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def _store(engine: Engine, msgs: list[SpooledMessage]) -> None:
    """Commit `msgs` through a real Spool on `engine`, as an acceptor does."""

    async def go() -> None:
        spool = Spool(engine)
        spool.start()
        try:
            await asyncio.gather(*(spool.store(m, *accepted_reply(m)) for m in msgs))
        finally:
            await asyncio.to_thread(spool.close)

    asyncio.run(go())


def _queue_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(inbound_messages.c.queue_id)).scalars())


def test_moves_messages_contents_and_log_once(main: Engine, tmp_path: Path) -> None:
    sp = open_spool_file(spool_file(tmp_path, 1))
    big = make_message(content=b"Subject: big\r\n\r\n" + b"B" * (3 * 1024 * 1024) + b"\r\n")
    msgs = [make_message(), big, make_message()]
    _store(sp, msgs)
    mover = SpoolMover(main, spool_dir(tmp_path))
    assert mover.move_all() == 3
    for m in msgs:
        stored = messages.get_message(main, m.queue_id)
        assert stored is not None and stored.content == m.content and stored.state == "received"
        assert stored.client_ip == m.client_ip and list(stored.rcpt_to) == list(m.rcpt_to)
    assert _count(main, email_log) == 3
    # Nothing is moved twice, by this mover or by a new one (another process, a restart).
    assert mover.move_all() == 0
    assert SpoolMover(main, spool_dir(tmp_path)).move_all() == 0
    assert _count(main) == 3 and _count(main, email_log) == 3
    mover.close()
    sp.dispose()


def test_trim_keeps_the_newest_row_so_ids_keep_growing(main: Engine, tmp_path: Path) -> None:
    sp = open_spool_file(spool_file(tmp_path, 1))
    _store(sp, [make_message() for _ in range(3)])
    mover = SpoolMover(main, spool_dir(tmp_path))
    mover.move_all()
    mover.close()  # trims: everything moved is deleted but the newest row
    assert _count(sp) == 1
    later = make_message()
    _store(sp, [later])  # gets id 4, not 1: the watermark (3) would otherwise hide it
    mover = SpoolMover(main, spool_dir(tmp_path))
    assert mover.move_all() == 1
    assert later.queue_id in _queue_ids(main)
    assert _count(main) == 4
    mover.close()
    sp.dispose()


def test_a_spool_file_made_again_is_not_mistaken_for_the_old_one(
    main: Engine, tmp_path: Path
) -> None:
    path = spool_file(tmp_path, 1)
    sp = open_spool_file(path)
    _store(sp, [make_message() for _ in range(5)])
    mover = SpoolMover(main, spool_dir(tmp_path))
    assert mover.move_all() == 5
    mover.close()
    sp.dispose()
    for p in path.parent.glob("acceptor-1.db*"):
        p.unlink()
    sp = open_spool_file(path)  # ids start from 1 again, under a new identity
    fresh = make_message()
    _store(sp, [fresh])
    mover = SpoolMover(main, spool_dir(tmp_path))
    assert mover.move_all() == 1
    assert fresh.queue_id in _queue_ids(main)
    with main.connect() as conn:
        assert conn.execute(select(func.count()).select_from(spool_transfers)).scalar_one() == 2
    mover.close()
    sp.dispose()


def test_a_lost_watermark_still_moves_no_message_twice(main: Engine, tmp_path: Path) -> None:
    """E.g. the database restored from a backup taken before the last move."""
    sp = open_spool_file(spool_file(tmp_path, 1))
    msgs = [make_message() for _ in range(4)]
    _store(sp, msgs)
    SpoolMover(main, spool_dir(tmp_path)).move_all()
    with db.begin_write(main) as conn:
        conn.execute(spool_transfers.delete())
    assert SpoolMover(main, spool_dir(tmp_path)).move_all() == 4  # looked at again ...
    assert sorted(_queue_ids(main)) == sorted(m.queue_id for m in msgs)  # ... stored once
    sp.dispose()


def test_moving_while_acceptors_commit_loses_and_doubles_nothing(
    main: Engine, tmp_path: Path
) -> None:
    """Two acceptors committing to their files while the mover runs: every message once."""
    files = [open_spool_file(spool_file(tmp_path, i)) for i in (1, 2)]
    sent: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 20

    def acceptor(engine: Engine) -> None:
        for _ in range(10):
            batch = [make_message() for _ in range(30)]
            _store(engine, batch)
            with lock:
                sent.extend(m.queue_id for m in batch)
            if time.monotonic() > deadline:
                return

    threads = [threading.Thread(target=acceptor, args=(e,)) for e in files]
    for t in threads:
        t.start()
    mover = SpoolMover(main, spool_dir(tmp_path))
    while any(t.is_alive() for t in threads):
        mover.move_all()
        mover._trim(spool_file(tmp_path, 1), force=True)  # trim while they commit, too
        time.sleep(0.01)
    for t in threads:
        t.join()
    mover.move_all()
    ids = _queue_ids(main)
    assert len(ids) == len(set(ids)) == len(sent) == 600
    assert set(ids) == set(sent)
    assert _count(main, email_log) == 600
    mover.close()
    for e in files:
        e.dispose()


def test_a_file_still_being_created_is_skipped(main: Engine, tmp_path: Path) -> None:
    """An acceptor starting up: the file exists but has no identity yet, so its rows could
    not be told apart from those of a file made again later: they wait."""
    path = spool_file(tmp_path, 1)
    path.parent.mkdir(parents=True)
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine)  # schema there, identity not yet set
    early = make_message()
    _store(engine, [early])
    assert SpoolMover(main, spool_dir(tmp_path)).move_all() == 0
    engine.dispose()
    open_spool_file(path).dispose()  # gives it its identity
    assert SpoolMover(main, spool_dir(tmp_path)).move_all() == 1
    assert _queue_ids(main) == [early.queue_id]


def _named_indexes(engine: Engine) -> list[str]:
    raw = engine.raw_connection()
    try:
        return [r[0] for r in raw.execute(  # type: ignore[attr-defined]
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")]
    finally:
        raw.close()


def test_a_spool_file_has_no_secondary_indexes_but_refuses_a_repeated_queue_id(
    main: Engine, tmp_path: Path
) -> None:
    assert _named_indexes(main)  # the main database keeps them
    sp = open_spool_file(spool_file(tmp_path, 1))
    assert _named_indexes(sp) == []
    first = make_message()
    _store(sp, [first])

    async def again() -> None:
        spool = Spool(sp)
        spool.start()
        try:
            with pytest.raises(SpoolCommitError):
                await spool.store(make_message(queue_id=first.queue_id), 250, "2.0.0 OK")
        finally:
            await asyncio.to_thread(spool.close)

    asyncio.run(again())
    assert SpoolMover(main, spool_dir(tmp_path)).move_all() == 1
    assert _queue_ids(main) == [first.queue_id]
    assert _count(main, email_log) == 1


def test_every_migration_applies_to_a_spool_file_without_its_secondary_indexes(
    tmp_path: Path
) -> None:
    """A spool file left by an older version is migrated with its indexes already dropped: a
    migration that alters one of them must tolerate that (if_exists)."""
    from alembic.script import ScriptDirectory

    revisions = [r.revision for r in ScriptDirectory.from_config(
        db._alembic_config()).walk_revisions()][::-1]
    assert len(revisions) >= 7
    engine = db.make_engine(f"sqlite:///{tmp_path / 'old-spool.db'}")
    try:
        for revision in revisions:
            db.upgrade(engine, revision)
            raw = engine.raw_connection()
            try:
                drop_secondary_indexes(raw)
            finally:
                raw.close()
            assert _named_indexes(engine) == []
    finally:
        engine.dispose()
    sp = open_spool_file(tmp_path / "old-spool.db")
    _store(sp, [make_message()])
    assert _count(sp) == 1
