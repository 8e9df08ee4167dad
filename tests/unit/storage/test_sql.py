"""storage.sql: each dialect difference on real SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    exists,
    func,
    insert,
    literal,
    select,
)

from mailcase.storage import db, sql

_meta = MetaData()
_items = Table(
    "t_items",
    _meta,
    Column("id", sql.BigId, primary_key=True),
    Column("key", String(50), nullable=False, unique=True),
    Column("hits", Integer, nullable=False),
    Column("tags", JSON, nullable=True),
)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An empty database (SQLite or PostgreSQL) with the test table."""
    engine = db.make_engine(db_url)
    _meta.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A sqlite3 connection in autocommit mode, as the raw paths get it from the engine."""
    conn = sqlite3.connect(tmp_path / "raw.sqlite3", isolation_level=None, timeout=0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE blobs (key BIGINT PRIMARY KEY, content BLOB NOT NULL)")
    try:
        yield conn
    finally:
        conn.close()


def test_dialect_names(engine: Engine) -> None:
    name = engine.dialect.name
    assert sql.dialect_name(engine) == name in ("sqlite", "postgresql")
    with engine.connect() as conn:
        assert sql.is_sqlite(conn) == (name == "sqlite")
        assert sql.is_postgresql(conn) == (name == "postgresql")
    assert db.is_sqlite is sql.is_sqlite and db.is_postgresql is sql.is_postgresql


def test_big_id_is_an_auto_incrementing_key_on_both(engine: Engine) -> None:
    """On SQLite only INTEGER PRIMARY KEY is a rowid alias: a BIGINT key would get NULL."""
    with db.begin_write(engine) as conn:
        ids = [
            conn.execute(insert(_items).returning(_items.c.id), {"key": k, "hits": 0}).scalar_one()
            for k in ("a", "b")
        ]
    assert ids[1] == ids[0] + 1
    ddl = str(sql.BigId.compile(dialect=engine.dialect))
    assert ddl == ("INTEGER" if sql.is_sqlite(engine) else "BIGINT")


def test_insert_ignore_skips_a_present_row(engine: Engine) -> None:
    with db.begin_write(engine) as conn:
        first = conn.execute(
            sql.insert_ignore(conn, _items).values(key="x", hits=1).returning(_items.c.id)
        ).first()
        again = conn.execute(
            sql.insert_ignore(conn, _items).values(key="x", hits=2).returning(_items.c.id)
        ).first()
        conn.execute(sql.insert_ignore(conn, _items), [{"key": "x", "hits": 3},
                                                       {"key": "y", "hits": 4}])
    assert first is not None and again is None
    with engine.connect() as conn:
        assert dict(conn.execute(select(_items.c.key, _items.c.hits)).all()) == {
            "x": 1, "y": 4,
        }


def test_upsert_inserts_then_updates(engine: Engine) -> None:
    for _ in range(3):
        with db.begin_write(engine) as conn:
            conn.execute(sql.upsert(
                conn, _items, {"key": "day", "hits": 1},
                key=[_items.c.key], set_={"hits": _items.c.hits + 1},
            ))
    with engine.connect() as conn:
        assert conn.execute(select(_items.c.hits).where(_items.c.key == "day")).scalar() == 3


def test_claim_rows_locks_only_on_postgresql(engine: Engine) -> None:
    stmt = sql.claim_rows(select(_items.c.id).order_by(_items.c.id).limit(1), of=_items)
    rendered = str(stmt.compile(dialect=engine.dialect))
    if sql.is_sqlite(engine):
        assert "FOR UPDATE" not in rendered  # one writer: BEGIN IMMEDIATE is the lock
    else:
        assert "FOR UPDATE OF t_items SKIP LOCKED" in rendered


@pytest.mark.postgres
def test_claim_rows_gives_concurrent_claimers_disjoint_rows(pg_engine: Engine) -> None:
    _meta.create_all(pg_engine)
    with db.begin_write(pg_engine) as conn:
        conn.execute(insert(_items), [{"key": k, "hits": 0} for k in ("a", "b", "c")])
    claim = sql.claim_rows(select(_items.c.key).order_by(_items.c.id).limit(2))
    with db.begin_write(pg_engine) as first, db.begin_write(pg_engine) as second:
        mine = first.execute(claim).scalars().all()
        theirs = second.execute(claim).scalars().all()  # does not wait for `first`
    assert mine == ["a", "b"] and theirs == ["c"]


def test_json_array_values_matches_an_element(engine: Engine) -> None:
    with db.begin_write(engine) as conn:
        conn.execute(insert(_items), [
            {"key": "one", "hits": 0, "tags": ["Red", "green"]},
            {"key": "two", "hits": 0, "tags": ["blue"]},
            {"key": "three", "hits": 0, "tags": []},
        ])
    values = sql.json_array_values(engine, _items.c.tags)
    has_green = exists(
        select(literal(1)).select_from(values).where(func.lower(values.c.value) == "green")
    )
    with engine.connect() as conn:
        assert conn.execute(select(_items.c.key).where(has_green)).scalars().all() == ["one"]


def test_an_unknown_dialect_is_refused() -> None:
    from sqlalchemy import create_mock_engine

    engine: Any = create_mock_engine("mysql://u@h/d", lambda *_: None)  # never connects
    with pytest.raises(ValueError, match="unsupported database dialect 'mysql'"):
        sql.insert_ignore(engine, _items)


# -- raw sqlite3 paths ---------------------------------------------------------------------
def test_immediate_commits_and_holds_the_write_lock(sqlite_db: sqlite3.Connection,
                                                    tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "raw.sqlite3", isolation_level=None, timeout=0)
    try:
        with sql.immediate(sqlite_db) as conn:
            assert conn is sqlite_db and sqlite_db.in_transaction
            # IMMEDIATE: the lock is taken at BEGIN, before this transaction wrote anything.
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            sqlite_db.execute("INSERT INTO blobs VALUES (1, x'00')")
        assert not sqlite_db.in_transaction
        assert other.execute("SELECT count(*) FROM blobs").fetchone() == (1,)
    finally:
        other.close()


def test_immediate_rolls_back_on_error(sqlite_db: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.IntegrityError), sql.immediate(sqlite_db):
        sqlite_db.execute("INSERT INTO blobs VALUES (1, x'00')")
        sqlite_db.execute("INSERT INTO blobs VALUES (1, x'01')")
    assert not sqlite_db.in_transaction
    assert sqlite_db.execute("SELECT count(*) FROM blobs").fetchone() == (0,)


def test_immediate_rolls_back_when_commit_fails(sqlite_db: sqlite3.Connection) -> None:
    """A deferred foreign key is checked at COMMIT: the failed COMMIT leaves the transaction
    open, and it must not stay open on the connection."""
    sqlite_db.execute("PRAGMA foreign_keys=ON")
    sqlite_db.execute(
        "CREATE TABLE child (parent BIGINT REFERENCES blobs (key) DEFERRABLE INITIALLY DEFERRED)"
    )
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), sql.immediate(sqlite_db):
        sqlite_db.execute("INSERT INTO child VALUES (7)")
    assert not sqlite_db.in_transaction
    assert sqlite_db.execute("SELECT count(*) FROM child").fetchone() == (0,)


def _big(n: int) -> bytes:
    return bytes(range(256)) * (n // 256) + b"tail"[: n % 256]


def test_insert_streamed_writes_the_content_in_chunks(sqlite_db: sqlite3.Connection) -> None:
    content = _big(2 * sql.BLOB_CHUNK + 3)
    with sql.immediate(sqlite_db):
        sqlite_db.execute("INSERT INTO blobs VALUES (500, x'')")  # the key is not the rowid
        rowid = sql.insert_streamed(sqlite_db, "blobs", {"key": 7}, "content",
                                    memoryview(content))
    row = sqlite_db.execute("SELECT rowid, content FROM blobs WHERE key = 7").fetchone()
    assert row == (rowid, content) and rowid != 7


def test_insert_copied_copies_a_blob_from_an_attached_database(
    sqlite_db: sqlite3.Connection, tmp_path: Path
) -> None:
    content = _big(sql.BLOB_CHUNK + 11)
    source = sqlite3.connect(tmp_path / "source.sqlite3", isolation_level=None)
    source.execute("CREATE TABLE blobs (key BIGINT PRIMARY KEY, content BLOB NOT NULL)")
    source.execute("INSERT INTO blobs VALUES (1, ?)", (content,))
    src_rowid = source.execute("SELECT rowid FROM blobs WHERE key = 1").fetchone()[0]
    source.close()
    sqlite_db.execute("ATTACH DATABASE ? AS sp", (str(tmp_path / "source.sqlite3"),))
    try:
        with sql.immediate(sqlite_db):
            sql.insert_copied(sqlite_db, "blobs", {"key": 9}, "content",
                              ("sp", src_rowid, len(content)))
    finally:
        sqlite_db.execute("DETACH DATABASE sp")
    assert sqlite_db.execute("SELECT content FROM blobs WHERE key = 9").fetchone() == (content,)


def test_every_model_uses_the_one_big_id() -> None:
    """Every BIGINT id key is `BigId` itself: a copy defined elsewhere could drift (lose the
    SQLite variant, and with it the auto-increment)."""
    from mailcase.schema import metadata

    keys = [
        t.c.id for t in metadata.tables.values()
        if "id" in t.c and t.c.id.primary_key and isinstance(t.c.id.type, BigInteger)
    ]
    assert len(keys) >= 10
    assert [c for c in keys if c.type is not sql.BigId] == []


#: SQLite's own SQL, as it would appear in code (string constants or `func.<name>`).
_SQLITE_ONLY = ("BEGIN IMMEDIATE", "PRAGMA", "zeroblob", "json_each", "sqlite_master")


def _sqlite_only_sql(path: Path) -> list[str]:
    """What in `path` is SQL for one dialect: an import of a dialect's constructs, or SQLite's
    own SQL in code (docstrings and comments may name it)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "sqlalchemy.dialects"
        ):
            found.append(f"{path.name}:{node.lineno}: from {node.module} import")
        elif isinstance(node, ast.Import):
            found += [f"{path.name}:{node.lineno}: import {a.name}" for a in node.names
                      if a.name.startswith("sqlalchemy.dialects")]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings
              and any(s.lower() in node.value.lower() for s in _SQLITE_ONLY)):
            found.append(f"{path.name}:{node.lineno}: {node.value[:60]!r}")
        elif isinstance(node, ast.Attribute) and node.attr in _SQLITE_ONLY:
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return found


def test_no_sqlite_only_sql_outside_storage() -> None:
    """DESIGN.md: "No SQLite-only SQL outside `storage/`" (the rest asks `storage.sql`)."""
    src = Path(sql.__file__).resolve().parents[1]
    found = [
        hit
        for path in sorted(src.rglob("*.py"))
        if src / "storage" not in path.parents
        for hit in _sqlite_only_sql(path)
    ]
    assert found == []
