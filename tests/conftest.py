"""Fixtures shared by all test suites: real databases (SQLite and PostgreSQL).

- ``pg_server``  (session)  a PostgreSQL server started from Debian's binaries (skips if absent)
- ``pg_url``     (session)  URL of one database on it, shared by the whole session
- ``pg_fresh_url``          URL of a new, empty database for this test (dropped afterwards)
- ``pg_engine``             engine on a new, empty database (not migrated)
- ``db_url``                a new database for this test; parametrized "sqlite" and
                            "postgresql" (the latter marked ``postgres``). Empty, unless the
                            test also uses ``db_engine``: then already migrated to head
- ``db_engine``             engine on ``db_url``, migrated to head; disposed afterwards

Migrating takes about half a second per database on PostgreSQL (a few dozen DDL statements,
each committed with fsync) and 0.2 s on SQLite, and some 300 tests need a migrated database.
So the migrations run once per session into a template (``pg_template``, ``sqlite_template``)
and each test gets a copy: ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL, a file copy on
SQLite. ``db_engine`` still runs ``upgrade()`` on the copy (a no-op at head).
The migrations themselves are tested on empty databases (tests/unit/storage/test_db.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.support.peers import missing
from tests.support.postgres import PostgresServer, PostgresUnavailable, find_bindir


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    if find_bindir() is None:
        missing("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin)")
    server = PostgresServer()
    try:
        server.start()
    except PostgresUnavailable as exc:
        server.stop()
        pytest.fail(f"PostgreSQL is installed but did not start: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.url(pg_server.create_database("mailcase"))


@pytest.fixture
def pg_fresh_url(pg_server: PostgresServer) -> Iterator[str]:
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def pg_engine(pg_fresh_url: str) -> Iterator[Engine]:
    from mailcase.storage.db import make_engine

    engine = make_engine(pg_fresh_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> str:
    """Name of a database migrated to head, once per session (only ever copied)."""
    from mailcase.storage.db import make_engine, upgrade

    name = pg_server.create_database("mailcase_template")
    engine = make_engine(pg_server.url(name))
    try:
        upgrade(engine)
    finally:
        engine.dispose()  # CREATE DATABASE ... TEMPLATE needs it without connections
    return name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head, once per session (only ever copied)."""
    from mailcase.storage.db import make_engine, upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "mailcase.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    # Closing the last connection checkpoints the WAL into the file: the file alone is the copy.
    assert not path.with_name(path.name + "-wal").exists(), "WAL not checkpointed"
    return path


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    migrated = "db_engine" in request.fixturenames
    if request.param == "sqlite":
        path = tmp_path / "db" / "mailcase.sqlite3"
        if migrated:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
    elif migrated:
        server: PostgresServer = request.getfixturevalue("pg_server")
        name = server.create_database(template=request.getfixturevalue("pg_template"))
        try:
            yield server.url(name)
        finally:
            server.drop_database(name)
    else:
        yield str(request.getfixturevalue("pg_fresh_url"))


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    from mailcase.storage.db import make_engine, upgrade

    engine = make_engine(db_url)
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
