"""Engines, the SQLite transaction recipe and migrations, on real SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, select, text
from sqlalchemy.exc import StatementError

from mailcase.errors import StorageError
from mailcase.schema import metadata
from mailcase.storage import db
from mailcase.storage.models import api_tokens, settings_generation

TABLES = {
    "receiving_addresses",
    "inbound_messages",
    "inbound_deliveries",
    "email_log",
    "api_tokens",
    "settings_generation",
}


def test_sqlite_url_creates_parent_dir_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "mail.db"
    engine = db.make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.BUSY_TIMEOUT_MS
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert path.exists()
        assert db.is_sqlite(engine) and not db.is_postgresql(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["postgresql://u@h/d", "postgres://u@h/d", "postgresql+psycopg://u@h/d"])
def test_postgresql_urls_use_psycopg3(url: str) -> None:
    engine = db.make_engine(url)
    assert engine.url.drivername == "postgresql+psycopg"
    assert db.is_postgresql(engine)
    engine.dispose()


@pytest.mark.parametrize("url", ["mysql://u@h/d", "postgresql+psycopg2://u@h/d", "nonsense"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(StorageError):
        db.make_engine(url)


def test_url_password_is_not_in_the_error() -> None:
    with pytest.raises(StorageError) as info:
        db.make_engine("mysql://user:hunter2@host/db")
    assert "hunter2" not in str(info.value)


def test_migrations_apply_and_rerun_is_a_noop(db_url: str) -> None:
    engine = db.make_engine(db_url)
    try:
        assert db.current_revision(engine) is None
        db.upgrade(engine)
        assert db.current_revision(engine) == db.head_revision()
        assert TABLES <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            before = conn.execute(select(settings_generation)).all()
        db.upgrade(engine)  # second run: nothing to do, nothing changed
        assert db.current_revision(engine) == db.head_revision()
        with engine.connect() as conn:
            assert conn.execute(select(settings_generation)).all() == before == [(1, 0)]
    finally:
        engine.dispose()


def test_models_match_migrations(db_engine: Engine) -> None:
    with db_engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, metadata) == []


def test_concurrent_upgrades_from_separate_engines(db_url: str) -> None:
    """Two processes starting at once on a fresh database: both succeed, schema made once."""
    engines = [db.make_engine(db_url) for _ in range(3)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def run(engine: Engine) -> None:
        try:
            barrier.wait()
            db.upgrade(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert db.current_revision(engines[0]) == db.head_revision()
        with engines[0].connect() as conn:
            assert conn.execute(select(settings_generation)).all() == [(1, 0)]
    finally:
        for e in engines:
            e.dispose()


def test_timestamps_are_aware_utc_and_naive_is_refused(db_engine: Engine) -> None:
    plus2 = timezone(timedelta(hours=2))
    created = datetime(2026, 1, 2, 12, 0, 0, 123456, tzinfo=plus2)
    with db.begin_write(db_engine) as conn:
        conn.execute(insert(api_tokens).values(name="t", token_hash="0" * 64, created_at=created))
    with db_engine.connect() as conn:
        got = conn.execute(select(api_tokens.c.created_at)).scalar_one()
    assert got == created and got.tzinfo is UTC
    assert got == datetime(2026, 1, 2, 10, 0, 0, 123456, tzinfo=UTC)
    with pytest.raises(StatementError, match="naive datetime"), db.begin_write(db_engine) as conn:
        naive = datetime(2026, 1, 1)
        conn.execute(insert(api_tokens).values(name="n", token_hash="1" * 64, created_at=naive))


def test_savepoints_work_inside_write_transactions(db_engine: Engine) -> None:
    """The pysqlite recipe makes SAVEPOINT part of the enclosing transaction."""
    with db.begin_write(db_engine) as conn:
        conn.execute(insert(api_tokens).values(name="kept", token_hash="a" * 64,
                                               created_at=datetime.now(UTC)))
        sp = conn.begin_nested()
        conn.execute(insert(api_tokens).values(name="undone", token_hash="b" * 64,
                                               created_at=datetime.now(UTC)))
        sp.rollback()
    with db_engine.connect() as conn:
        assert conn.execute(select(api_tokens.c.name)).scalars().all() == ["kept"]


def test_write_session_commits(db_engine: Engine) -> None:
    with db.write_session(db_engine) as session:
        session.execute(insert(api_tokens).values(name="s", token_hash="c" * 64,
                                                  created_at=datetime.now(UTC)))
    with db_engine.connect() as conn:
        assert conn.execute(select(api_tokens.c.name)).scalars().all() == ["s"]


def test_sqlite_writers_wait_for_each_other_instead_of_failing(tmp_path: Path) -> None:
    """Two engines (think: server and CLI) on one file: BEGIN IMMEDIATE waits for the lock."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    a, b = db.make_engine(url), db.make_engine(url)
    try:
        db.upgrade(a)
        entered = threading.Event()
        release = threading.Event()

        def hold() -> None:
            with db.begin_write(a) as conn:
                conn.execute(text("UPDATE settings_generation SET generation = generation + 1"))
                entered.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert entered.wait(10)
        # A deferred read in the meantime is fine: WAL readers do not wait for writers.
        with b.connect() as conn:
            assert conn.execute(select(settings_generation.c.generation)).scalar_one() == 0
        threading.Timer(0.3, release.set).start()
        started = time.monotonic()
        with db.begin_write(b) as conn:  # waits for the holder, then proceeds
            waited = time.monotonic() - started
            conn.execute(text("UPDATE settings_generation SET generation = generation + 1"))
        holder.join(10)
        assert waited >= 0.2
        with b.connect() as conn:
            assert conn.execute(select(settings_generation.c.generation)).scalar_one() == 2
    finally:
        a.dispose()
        b.dispose()


def test_migration_scripts_are_package_data() -> None:
    """pyproject's package-data globs must cover what Alembic needs at run time."""
    import mailcase.storage

    base = Path(mailcase.storage.__file__).parent / "migrations"
    assert (base / "env.py").is_file()
    assert (base / "script.py.mako").is_file()
    assert (base / "versions" / "0001_initial.py").is_file()
