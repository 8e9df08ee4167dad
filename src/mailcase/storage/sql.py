"""What SQLite and PostgreSQL spell differently, in one place.

DESIGN.md: "No SQLite-only SQL outside `storage/`". Code elsewhere asks this module for the
statement it means (insert unless present, insert or update, rows claimed by one worker, a
JSON array as rows) and gets the right one for its connection, instead of branching on the
dialect's name and importing both dialects' `insert`.

The SQLite-only parts the storage package itself needs are here too: a raw ``BEGIN IMMEDIATE``
transaction on a sqlite3 connection (`immediate`), and big blobs written or copied in chunks
with incremental blob I/O (`insert_streamed`, `insert_copied`), so a 35 MB message is never
held twice in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from sqlalchemy import BigInteger, Column, Connection, Engine, FromClause, Integer, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement, Select, func
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeEngine

__all__ = [
    "BLOB_CHUNK",
    "BLOB_STREAM_MIN",
    "BigId",
    "claim_rows",
    "dialect_name",
    "immediate",
    "insert_copied",
    "insert_ignore",
    "insert_streamed",
    "is_postgresql",
    "is_sqlite",
    "json_array_values",
    "upsert",
]

#: Primary key type: BIGINT on PostgreSQL, INTEGER on SQLite, where only ``INTEGER PRIMARY
#: KEY`` is an auto-incrementing rowid alias (a BIGINT key there would get no value).
BigId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")

#: Contents at least this big are written with incremental blob I/O, in chunks of BLOB_CHUNK.
BLOB_STREAM_MIN = 1024 * 1024
BLOB_CHUNK = 1024 * 1024

Bind = Engine | Connection | Session


def dialect_name(bind: Bind) -> str:
    """"sqlite" or "postgresql" (the only two `db.make_engine` opens)."""
    if isinstance(bind, Session):
        return bind.get_bind().dialect.name
    return bind.dialect.name


def is_sqlite(bind: Bind) -> bool:
    """True when `bind` talks to SQLite."""
    return dialect_name(bind) == "sqlite"


def is_postgresql(bind: Bind) -> bool:
    """True when `bind` talks to PostgreSQL."""
    return dialect_name(bind) == "postgresql"


def _insert(bind: Bind, table: Table) -> Any:
    """The dialect's own INSERT construct (the one with ``on_conflict_*``)."""
    if is_postgresql(bind):
        return postgresql.insert(table)
    if is_sqlite(bind):
        return sqlite.insert(table)
    raise ValueError(f"unsupported database dialect {dialect_name(bind)!r}")


def insert_ignore(bind: Bind, table: Table) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` into `table` (both engines spell it the same, but
    through their own construct). Add ``.values(…)``/``.returning(…)`` or execute with rows;
    with RETURNING, no row back means it was already there."""
    stmt: Insert = _insert(bind, table).on_conflict_do_nothing()
    return stmt


def upsert(
    bind: Bind,
    table: Table,
    values: Mapping[str, Any],
    key: Sequence[Column[Any]],
    set_: Mapping[str, Any],
) -> Insert:
    """``INSERT … ON CONFLICT (key) DO UPDATE SET …``: one statement, so concurrent writers
    on PostgreSQL neither lose an update nor fail on the unique key."""
    stmt: Insert = _insert(bind, table).values(**values).on_conflict_do_update(
        index_elements=list(key), set_=dict(set_)
    )
    return stmt


def claim_rows(stmt: Select[Any], of: FromClause | None = None) -> Select[Any]:
    """`stmt` taking its rows for this transaction: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
    so that several nodes claim disjoint rows. SQLite renders no locking clause and needs none:
    a write transaction (BEGIN IMMEDIATE) already holds the database's only write lock."""
    return stmt.with_for_update(skip_locked=True, of=of)


def json_array_values(bind: Bind, column: ColumnElement[Any]) -> Any:
    """The elements of a JSON array column as a table-valued function with one column,
    ``value`` (text): SQLite's ``json_each``, PostgreSQL's ``json_array_elements_text``."""
    if is_sqlite(bind):
        return func.json_each(column).table_valued("value")
    return func.json_array_elements_text(column).table_valued("value")


class immediate:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` on a sqlite3 connection (ROLLBACK on any error).

    For the raw paths that bypass SQLAlchemy's transaction (the spool's accept path, the spool
    mover): IMMEDIATE takes the write lock up front, so the transaction cannot fail half way
    on a lock another process took (see `db`). A class, not a generator: it costs the accept
    path no more than the two statements written out.
    """

    __slots__ = ("_db",)

    def __init__(self, db: Any) -> None:
        self._db = db

    def __enter__(self) -> Any:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        db = self._db
        if exc_type is None:
            try:
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        elif db.in_transaction:
            db.execute("ROLLBACK")


def _insert_zeroblob(
    db: Any, table: str, values: Mapping[str, Any], column: str, size: int, schema: str
) -> int:
    """Insert a row whose `column` is `size` zero bytes; returns its rowid (a BIGINT primary
    key is no rowid alias in SQLite, so the blob must be opened by this rowid)."""
    names = [*values, column]
    marks = ["?"] * len(values) + ["zeroblob(?)"]
    cur = db.execute(
        f"INSERT INTO {schema}.{table} ({', '.join(names)}) "  # noqa: S608 - names from our metadata
        f"VALUES ({', '.join(marks)})",
        (*values.values(), size),
    )
    try:
        return int(cur.lastrowid)
    finally:
        cur.close()


def insert_streamed(
    db: Any,
    table: str,
    values: Mapping[str, Any],
    column: str,
    content: bytes | bytearray | memoryview,
    *,
    schema: str = "main",
) -> int:
    """SQLite: insert `values` with `content` in `column`, written in chunks of BLOB_CHUNK
    (no SQL parameter copy of a big message). `db` is a sqlite3 connection in a transaction;
    returns the new rowid."""
    view = memoryview(content).cast("B")
    rowid = _insert_zeroblob(db, table, values, column, len(view), schema)
    with db.blobopen(table, column, rowid, name=schema) as blob:
        for start in range(0, len(view), BLOB_CHUNK):
            blob.write(view[start : start + BLOB_CHUNK])
    return rowid


def insert_copied(
    db: Any,
    table: str,
    values: Mapping[str, Any],
    column: str,
    source: tuple[str, int, int],
    *,
    schema: str = "main",
) -> int:
    """SQLite: insert `values` with `column` copied from another row's blob, in chunks.

    `source` is (schema, rowid, size) of the blob in the same table and column, e.g. an
    attached spool file's; at most BLOB_CHUNK bytes are in memory at a time. Returns the new
    rowid."""
    src_schema, src_rowid, size = source
    rowid = _insert_zeroblob(db, table, values, column, size, schema)
    with (
        db.blobopen(table, column, src_rowid, readonly=True, name=src_schema) as src,
        db.blobopen(table, column, rowid, name=schema) as dst,
    ):
        while chunk := src.read(BLOB_CHUNK):
            dst.write(chunk)
    return rowid
