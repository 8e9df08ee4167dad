"""Spool files: each SMTP acceptor process (and the mailbox agent) commits to a SQLite file of
its own.

Why: with several acceptor processes on one SQLite database, every group commit waited for
the one write lock the others and the pipeline held, and the accept rate was bound by that
wait, not by the CPU (DESIGN.md: "several acceptor processes can share the port without sharing
one write lock"). With a file each, an acceptor's commit (WAL, ``synchronous=FULL``: the 250
still means fsynced) waits only for its own writer thread.

The parent moves what the acceptors committed into the main database (`SpoolMover`), where the
pipeline, the CLI and the API see it; it wakes on the acceptors' "wake" messages. A move is
one transaction on the main database: the messages, their contents, the email-log entries and a
watermark (the last spool ids moved) commit together. Only after that are the moved rows
deleted from the spool file. A crash between the two steps moves nothing twice: the watermark
says what is already in, and messages are also matched by their unique queue id.

Two SQLite details the mover depends on:

- The spool file keeps its row with the highest id when it is trimmed, so that ids never
  start again from 1 (SQLite gives a new row max(rowid)+1, and the watermark needs them to
  grow).
- A spool file has an identity (a random number in ``PRAGMA user_version``, set when it is
  created) that is part of the watermark's key: a spool file deleted and made again starts
  from a fresh watermark instead of being skipped as "already moved".

Big contents are copied with incremental blob I/O, so a 35 MB message is never read whole
into memory by the mover. PostgreSQL needs none of this: its acceptors commit directly.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from mailcase.storage.db import make_engine, upgrade, write_lock
from mailcase.storage.models import email_log, inbound_contents, inbound_messages
from mailcase.storage.sql import BLOB_STREAM_MIN, immediate, insert_copied, is_sqlite

__all__ = [
    "SpoolMover",
    "drop_secondary_indexes",
    "fetcher_spool_file",
    "open_spool_file",
    "spool_dir",
    "spool_file",
]

log = logging.getLogger(__name__)

_STREAM_MIN_BYTES = BLOB_STREAM_MIN
# Trim a spool file once this many moved messages accumulated, or this long after the last
# trim: each trim is a commit on the acceptor's file, so not after every move.
_TRIM_ROWS = 2000
_TRIM_SECONDS = 5.0
# Rows moved per transaction at most, so one move never holds the main write lock for long.
_MAX_MOVE = 2000


def spool_dir(data_dir: Path) -> Path:
    """Where the acceptors' spool files live."""
    return data_dir / "spool"


def spool_file(data_dir: Path, index: int) -> Path:
    """The spool file of acceptor `index`."""
    return spool_dir(data_dir) / f"acceptor-{index}.db"


def fetcher_spool_file(data_dir: Path) -> Path:
    """The spool file of the mailbox agent (the `fetch` role, issue 19): its commits, like an
    acceptor's, wait neither for the pipeline's write lock nor for the acceptors'."""
    return spool_dir(data_dir) / "fetcher.db"


def open_spool_file(path: Path) -> Engine:
    """Open (creating if needed) a spool file with the main database's schema.

    The full schema, migrated like the main database, so that `Spool` writes it unchanged
    and a spool file left by an older version is brought up to date before use; but without
    the secondary indexes (`drop_secondary_indexes`).
    """
    engine = make_engine(f"sqlite:///{path.resolve()}")
    upgrade(engine)
    raw: Any = engine.raw_connection()
    try:
        drop_secondary_indexes(raw)
        if raw.execute("PRAGMA user_version").fetchone()[0] == 0:
            raw.execute(f"PRAGMA user_version = {secrets.randbelow(2**31 - 2) + 1}")
    finally:
        raw.close()
    return engine


def drop_secondary_indexes(db: Any) -> None:
    """Drop the indexes a spool file does not need: every one created by name (the unique and
    primary-key ones SQLite makes for constraints stay, and so does the duplicate queue id
    check).

    A spool file is only appended to by its acceptor and read by id by the mover, and every
    commit rewrote a page of each index: five pages of 4 KB per group commit, for a few
    messages of 2 KB. Without them an acceptor spent about 4% less CPU per message and accepted
    3–7% more messages per second with a connection per message. A migration that changes
    one of these indexes must therefore tolerate its absence in a spool file (``if_exists``);
    `test_spoolfiles` walks every migration over a spool file to keep that true.
    """
    names = [
        r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    ]
    for name in names:
        db.execute(f'DROP INDEX IF EXISTS "{name}"')
    if names:
        db.commit()


class SpoolMover:
    """Moves committed messages and log entries from the spool files into the main database."""

    def __init__(self, main: Engine, directory: Path) -> None:
        if not is_sqlite(main):
            raise ValueError("spool files are for SQLite; PostgreSQL acceptors commit directly")
        self.main, self.directory = main, directory
        self._engines: dict[Path, Engine] = {}
        self._trimmed: dict[Path, tuple[float, int]] = {}
        # The watermark this mover last wrote for each file: (file identity, message id, log id).
        self._marks: dict[Path, tuple[int, int, int]] = {}
        self._msg_cols = [c.name for c in inbound_messages.columns if c.name != "id"]
        self._log_cols = [c.name for c in email_log.columns if c.name != "id"]

    def files(self) -> list[Path]:
        """The spool files present now (also those of acceptors that no longer run, and the
        mailbox agent's)."""
        return sorted([*self.directory.glob("acceptor-*.db"),
                       *self.directory.glob("fetcher.db")])

    def move_all(self) -> int:
        """Move everything committed so far from every spool file; returns messages moved."""
        total = 0
        for path in self.files():
            while True:
                n, more = self.move(path)
                total += n
                if not more:
                    break
        return total

    def close(self) -> None:
        """Trim what was moved and release the spool files' connections."""
        for path in list(self._marks):
            try:
                self._trim(path, force=True)
            except Exception as e:  # noqa: BLE001 - trimming is housekeeping
                log.warning("could not trim %s: %s", path, e)
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()

    # ------------------------------------------------------------------ one file
    def _engine(self, path: Path) -> Engine:
        engine = self._engines.get(path)
        if engine is None:
            engine = self._engines[path] = make_engine(f"sqlite:///{path.resolve()}")
        return engine

    def move(self, path: Path) -> tuple[int, bool]:
        """One transaction's worth from `path`; returns (messages moved, more waiting)."""
        with write_lock(self.main):
            raw: Any = self.main.raw_connection()
            try:
                moved, more = self._move_locked(raw.driver_connection, path)
            finally:
                raw.close()
        self._trim(path, force=False)
        return moved, more

    def _move_locked(self, db: Any, path: Path) -> tuple[int, bool]:
        db.execute("ATTACH DATABASE ? AS sp", (str(path.resolve()),))
        try:
            with immediate(db):
                result = self._copy(db, path)
        finally:
            db.execute("DETACH DATABASE sp")
        return result

    def _copy(self, db: Any, path: Path) -> tuple[int, bool]:
        identity = db.execute("PRAGMA sp.user_version").fetchone()[0]
        if identity == 0:  # created but not yet initialised by its acceptor
            return 0, False
        key = f"{path.name}#{identity}"
        row = db.execute(
            "SELECT last_message_id, last_log_id FROM spool_transfers WHERE spool = ?",
            (key,),
        ).fetchone()
        last_msg, last_log = (int(row[0]), int(row[1])) if row else (0, 0)
        msg_ids = [
            r[0]
            for r in db.execute(
                "SELECT id FROM sp.inbound_messages WHERE id > ? ORDER BY id LIMIT ?",
                (last_msg, _MAX_MOVE + 1),
            )
        ]
        more = len(msg_ids) > _MAX_MOVE
        msg_ids = msg_ids[:_MAX_MOVE]
        max_msg = msg_ids[-1] if msg_ids else last_msg
        max_log = db.execute(
            "SELECT coalesce(max(id), 0) FROM sp.email_log"
        ).fetchone()[0]
        if not msg_ids and max_log <= last_log:
            return 0, False
        cols = ", ".join(self._msg_cols)
        s_cols = ", ".join(f"s.{c}" for c in self._msg_cols)
        # Messages (a queue id already present was moved before a crash: skipped).
        db.execute(
            f"INSERT INTO main.inbound_messages ({cols}) SELECT {s_cols} "  # noqa: S608
            "FROM sp.inbound_messages s WHERE s.id > ? AND s.id <= ? AND NOT EXISTS "
            "(SELECT 1 FROM main.inbound_messages m WHERE m.queue_id = s.queue_id) "
            "ORDER BY s.id",
            (last_msg, max_msg),
        )
        # Contents: the small ones in one statement, big ones streamed (never whole in memory).
        matched = (
            "FROM sp.inbound_contents c JOIN sp.inbound_messages s ON s.id = c.message_pk "
            "JOIN main.inbound_messages m ON m.queue_id = s.queue_id "
            "WHERE s.id > ? AND s.id <= ? AND NOT EXISTS "
            "(SELECT 1 FROM main.inbound_contents x WHERE x.message_pk = m.id) "
        )
        db.execute(
            "INSERT INTO main.inbound_contents (message_pk, content) SELECT m.id, c.content "
            + matched + "AND length(c.content) < ? ORDER BY s.id",
            (last_msg, max_msg, _STREAM_MIN_BYTES),
        )
        big = db.execute(
            "SELECT m.id, c.rowid, length(c.content) " + matched + "ORDER BY s.id",
            (last_msg, max_msg),
        ).fetchall()
        for main_pk, sp_rowid, size in big:
            self._stream(db, main_pk, sp_rowid, size)
        if max_log > last_log:
            lcols = ", ".join(self._log_cols)
            db.execute(
                f"INSERT INTO main.email_log ({lcols}) SELECT {lcols} FROM sp.email_log "  # noqa: S608
                "WHERE id > ? AND id <= ? ORDER BY id",
                (last_log, max_log),
            )
        db.execute(
            "INSERT INTO spool_transfers (spool, last_message_id, last_log_id) "
            "VALUES (?, ?, ?) ON CONFLICT (spool) DO UPDATE SET "
            "last_message_id = excluded.last_message_id, last_log_id = excluded.last_log_id",
            (key, max_msg, max(max_log, last_log)),
        )
        self._marks[path] = (identity, max_msg, max(max_log, last_log))
        return len(msg_ids), more

    @staticmethod
    def _stream(db: Any, main_pk: int, sp_rowid: int, size: int) -> None:
        insert_copied(db, inbound_contents.name, {"message_pk": main_pk}, "content",
                      ("sp", sp_rowid, size))

    def _trim(self, path: Path, *, force: bool) -> None:
        """Delete moved rows from the spool file, keeping the newest (ids must keep growing)."""
        mark = self._marks.get(path)
        if mark is None:
            return  # nothing moved by this mover
        identity, last_msg, last_log = mark
        now = time.monotonic()
        last_time, last_count = self._trimmed.get(path, (now, 0))
        if not force and last_msg - last_count < _TRIM_ROWS and now - last_time < _TRIM_SECONDS:
            return
        engine = self._engine(path)
        with engine.connect() as conn:
            if conn.exec_driver_sql("PRAGMA user_version").scalar() != identity:
                return  # the file was made again since: its rows are not these
        with write_lock(engine):
            raw_conn: Any = engine.raw_connection()
            try:
                with immediate(raw_conn.driver_connection) as db:
                    db.execute("DELETE FROM inbound_contents WHERE message_pk <= ?", (last_msg,))
                    db.execute("DELETE FROM inbound_messages WHERE id < ?", (last_msg,))
                    db.execute("DELETE FROM email_log WHERE id < ?", (last_log,))
            finally:
                raw_conn.close()
        self._trimmed[path] = (now, last_msg)
