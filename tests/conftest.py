"""Fixtures shared by all test suites: real databases (SQLite and PostgreSQL).

- ``pg_server``  (session)  a PostgreSQL server started from Debian's binaries (skips if absent)
- ``pg_url``     (session)  URL of one database on it, shared by the whole session
- ``pg_fresh_url``          URL of a new, empty database for this test (dropped afterwards)
- ``pg_engine``             engine on a new, empty database (not migrated)
- ``db_url``                a new, empty database for this test; parametrized "sqlite" and
                            "postgresql" (the latter marked ``postgres``)
- ``db_engine``             engine on ``db_url``, migrated to head; disposed afterwards
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.support.postgres import PostgresServer, PostgresUnavailable, find_bindir


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    if find_bindir() is None:
        pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin)")
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


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'mailcase.sqlite3'}"
    return str(request.getfixturevalue("pg_fresh_url"))


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    from mailcase.storage.db import make_engine, upgrade

    engine = make_engine(db_url)
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
