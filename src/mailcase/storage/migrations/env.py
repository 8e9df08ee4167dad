"""Alembic environment for mailcase.

`mailcase.storage.db.upgrade` hands over an open connection (already in a transaction and,
on PostgreSQL, holding the migration advisory lock) through ``config.attributes["connection"]``.
Run from the alembic command line instead, the database URL comes from ``-x url=…``,
``sqlalchemy.url`` or the environment variable MAILCASE_DATABASE_URL.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from mailcase.schema import metadata
from mailcase.storage.db import make_engine

config = context.config


def _url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("MAILCASE_DATABASE_URL")
    )
    if not url:
        raise SystemExit("no database URL: pass -x url=… or set MAILCASE_DATABASE_URL")
    return url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: later migrations use batch mode (copy and move).
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


def _run_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
