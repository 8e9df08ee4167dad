"""`per_transaction`: one answer per transaction, never carried into the next one."""

from __future__ import annotations

from sqlalchemy import Engine

from mailcase.storage.db import begin_write
from mailcase.storage.txmemo import per_transaction


def test_computed_once_per_transaction_and_again_in_the_next(db_engine: Engine) -> None:
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    with begin_write(db_engine) as conn:
        assert [per_transaction(conn, "k", compute) for _ in range(3)] == [1, 1, 1]
        assert per_transaction(conn, "other", compute) == 2  # keys apart
    with begin_write(db_engine) as conn:  # the pool may hand out the same DBAPI connection
        assert per_transaction(conn, "k", compute) == 3


def test_nothing_is_kept_outside_a_transaction(db_engine: Engine) -> None:
    calls: list[int] = []
    with db_engine.connect() as conn:
        assert conn.get_transaction() is None
        per_transaction(conn, "k", lambda: calls.append(1))
        per_transaction(conn, "k", lambda: calls.append(1))
    assert len(calls) == 2
