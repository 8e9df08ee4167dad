"""Engines, write transactions and migrations for SQLite (WAL) and PostgreSQL.

Why the SQLite set-up looks the way it does:

- `journal_mode=WAL` lets readers (web, CLI) run while the spool writer commits, and makes a
  commit an append to one file; `synchronous=FULL` fsyncs the WAL on every commit, which the
  250 after DATA promises (DESIGN.md "Durability").
- Several processes (server, CLI commands) share one file: `busy_timeout` makes a writer wait
  for the lock instead of failing at once.
- pysqlite's legacy transaction handling does not emit BEGIN for SELECT or DDL, so we take
  transaction control over with SQLAlchemy's documented recipe (``isolation_level = None`` on
  connect, our own BEGIN in the ``begin`` event). Read transactions use a plain (deferred)
  BEGIN, so readers never take the write lock. Write transactions must use `begin_write` or
  `write_session`: they start with ``BEGIN IMMEDIATE``, which takes the write lock up front and
  waits for it under `busy_timeout`. A deferred transaction that reads and then writes can
  instead fail at once with "database is locked" when another process committed in between
  (SQLite cannot upgrade a stale read snapshot), and `busy_timeout` does not help there.

On PostgreSQL `begin_write` is an ordinary transaction. URLs ``postgresql://`` and
``postgres://`` are mapped to the psycopg 3 driver.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session

from mailcase.errors import StorageError
from mailcase.filemodes import private_dir, private_file, tighten
from mailcase.storage.sql import is_postgresql, is_sqlite

__all__ = [
    "BUSY_TIMEOUT_MS",
    "WRITE_OPTION",
    "begin_write",
    "write_lock",
    "current_revision",
    "describe_url",
    "head_revision",
    "unreachable",
    "is_postgresql",
    "is_sqlite",
    "make_engine",
    "upgrade",
    "write_session",
]

#: How long a SQLite writer waits for another writer's lock before failing.
BUSY_TIMEOUT_MS = 10_000

#: Execution option that makes SQLite start the transaction with BEGIN IMMEDIATE.
WRITE_OPTION = "mailcase_write"

# Key of the PostgreSQL advisory lock that serialises migrations ("mailcase" in ASCII, 8 bytes).
_MIGRATION_LOCK_KEY = 0x6D61696C63617365

_MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
)


def make_engine(url: str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Engine:
    """Create an engine for ``sqlite:///path`` or ``postgresql://…`` with mailcase's settings.

    `busy_timeout_ms`: how long a SQLite writer waits for another one before failing.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageError(f"invalid database URL: {exc}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return _make_sqlite_engine(parsed, busy_timeout_ms)
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise StorageError(
                f"unsupported PostgreSQL driver {driver!r}: use postgresql:// (psycopg 3)"
            )
        parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(
            parsed,
            pool_pre_ping=True,
            connect_args={"connect_timeout": 10, "application_name": "mailcase"},
        )
    raise StorageError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
        "use sqlite:///path or postgresql://user@host/db"
    )


def _make_sqlite_engine(url: URL, busy_timeout_ms: int) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        _private_database_files(Path(database).expanduser().resolve())
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy's recipe: stop pysqlite from emitting BEGIN/COMMIT on its own.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock that another process may hold.
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}").fetchall()
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma).fetchall()
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    with _WRITE_LOCKS_GUARD:
        _WRITE_LOCKS[engine] = _SQLiteWriteLock(database, busy_timeout_ms / 1000)
    return engine


def _private_database_files(path: Path) -> None:
    """Make a SQLite database and its companions readable by our user only (0600, in a 0700
    directory when we create it): the file is created here first, because SQLite creates it
    0644 and gives the -wal and -shm files the database file's mode."""
    private_dir(path.parent)
    private_file(path)
    for suffix in ("", "-wal", "-shm", "-journal", ".writelock"):
        tighten(path.with_name(path.name + suffix))


class _SQLiteWriteLock:
    """A thread lock for this process, then an flock for the other processes on the file."""

    def __init__(self, database: str, timeout: float) -> None:
        self.timeout = timeout
        self.thread_lock = threading.Lock()
        self.fd: int | None = None
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database).expanduser().resolve()
            self.fd = os.open(f"{path}.writelock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __del__(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.thread_lock:
            if self.fd is None:
                yield
                return
            self._acquire(self.fd, self.timeout)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    @staticmethod
    def _acquire(fd: int, timeout: float) -> None:
        """flock with a deadline: a blocking flock could not be given up, and a storage
        failure must become a 451 within the busy timeout, never a hang. The polling is fine
        grained (50 µs doubling to 1 ms), unlike SQLite's busy handler."""
        deadline = time.monotonic() + timeout
        pause = 0.00005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StorageError(
                        "database is locked: another process held the write lock for "
                        f"{timeout:g} s"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.001)


_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, _SQLiteWriteLock] = weakref.WeakKeyDictionary()
_WRITE_LOCKS_GUARD = threading.Lock()


@contextmanager
def write_lock(engine: Engine) -> Iterator[None]:
    """Serialise SQLite write transactions: a thread lock, then an flock across processes.

    SQLite allows one writer; a second one waits in SQLite's busy handler, which sleeps and
    polls (1, 2, 5 … 100 ms). Between the spool's writer and the pipeline that sleep was the
    whole cost of the accept path (293 msgs/s instead of thousands), and several acceptor
    processes on one database would meet it again. A thread lock and an flock on
    `<database>.writelock` hand over at once instead. A process that does not take the lock
    (an older CLI, a manual sqlite3 shell) still meets the busy timeout, never an error.
    PostgreSQL needs nothing: its writers do not exclude each other.
    """
    if not is_sqlite(engine):
        yield
        return
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(engine)
        if lock is None:
            lock = _WRITE_LOCKS[engine] = _SQLiteWriteLock(
                engine.url.database or "", BUSY_TIMEOUT_MS / 1000
            )
    with lock.held():
        yield


@contextmanager
def begin_write(engine: Engine) -> Iterator[Connection]:
    """A connection in a write transaction (BEGIN IMMEDIATE on SQLite); commits on success."""
    with write_lock(engine), engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            yield conn


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """An ORM session in a write transaction (BEGIN IMMEDIATE on SQLite); commits on success."""
    with write_lock(engine), Session(engine) as session, session.begin():
        session.connection(execution_options={WRITE_OPTION: True})
        yield session


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS_DIR).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest migration revision shipped with this version of mailcase."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise StorageError("no migrations found")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None if it was never migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(
    engine: Engine,
    revision: str = "head",
    *,
    server_secret: Callable[[], bytes] | None = None,
) -> None:
    """Apply migrations up to `revision`; safe when several processes start at once.

    `server_secret` gives the instance's secret to migrations that encrypt data (0008: relay
    passwords); it is called only when one has something to encrypt.

    PostgreSQL: a transaction-scoped advisory lock serialises migrators, and the migration runs
    in that transaction (PostgreSQL has transactional DDL), so a second process sees the first
    one's result. SQLite: the whole upgrade runs in one BEGIN IMMEDIATE transaction, which holds
    the database's write lock; a second process waits, then finds nothing to do.
    """
    cfg = _alembic_config()
    deadline = time.monotonic() + 300
    while True:
        try:
            with engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    if is_postgresql(conn):
                        conn.execute(
                            text("SELECT pg_advisory_xact_lock(:key)"),
                            {"key": _MIGRATION_LOCK_KEY},
                        )
                    cfg.attributes["connection"] = conn
                    cfg.attributes["server_secret"] = server_secret
                    command.upgrade(cfg, revision)
            return
        except OperationalError as exc:
            # A long migration elsewhere can outlast SQLite's busy timeout: wait more.
            locked = is_sqlite(engine) and "locked" in str(exc.orig)
            if not locked or time.monotonic() > deadline:
                raise
        finally:
            cfg.attributes.pop("connection", None)
            cfg.attributes.pop("server_secret", None)


def describe_url(database_url: str) -> str:
    """The database named for a message: its file, or its URL with the password masked."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        return "(invalid database URL)"
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


#: What an operator does about a connection failure, by what the driver said (first match).
_CONNECT_ADVICE = (
    (("password authentication failed", "no password supplied", "authentication failed"),
     "check the user name and password in database.url (MAILCASE_DATABASE__URL)"),
    (("does not exist",),
     "create that database and user (createdb, createuser) or fix database.url"),
    (("unable to open database file", "readonly database", "disk i/o error"),
     "check that the directory exists and this user may write there, or fix --data-dir / "
     "database.url"),
    (("connection refused", "could not connect", "timeout expired", "timed out",
      "could not translate host name", "name or service not known", "no route to host"),
     "check that the database server runs and listens there, and database.url "
     "(MAILCASE_DATABASE__URL)"),
)


def unreachable(exc: DBAPIError, database_url: str) -> str:
    """One line for a database that cannot be used: what happened, where, what to do.

    The driver's own first line says what (psycopg: "connection refused", "password
    authentication failed for user ..."); the URL is shown with its password masked, and the
    password is also masked wherever the driver's text might repeat it."""
    reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    what = reason[0] if reason else type(exc).__name__
    what = what.removeprefix("connection failed: ")
    try:
        password = make_url(database_url).password
    except ArgumentError:
        password = None
    if password:
        what = what.replace(str(password), "***")
    lowered = what.lower()
    advice = next(
        (a for keys, a in _CONNECT_ADVICE if any(k in lowered for k in keys)),
        "check database.url (MAILCASE_DATABASE__URL) and that the database is up",
    )
    return f"cannot use the database at {describe_url(database_url)}: {what}; {advice}"
