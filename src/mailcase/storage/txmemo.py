"""Values read once per transaction: settings a batch asks about for every message.

The pipeline processes a batch of messages in one write transaction, and for each message the
features asked the database the same questions: the routing address's notify-owner switch, the
auto-response rules, our own addresses. Profiling `bench/cases.py` showed those repeated
look-ups as a third of the statements per message, each costing more in SQLAlchemy's
statement building than in SQLite (issue 13). Nothing in the pipeline's transaction writes
those settings, and what a concurrent admin change would show a moment later is the next
batch's to see, so one answer per transaction is the answer the first message got.

The memo lives in `Connection.info` (per DBAPI connection) next to the transaction it belongs
to, and is dropped as soon as that connection runs another transaction; outside a transaction
nothing is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from sqlalchemy import Connection

__all__ = ["per_transaction"]

T = TypeVar("T")
_KEY = "mailcase.per_transaction"


def per_transaction(conn: Connection, key: Hashable, compute: Callable[[], T]) -> T:
    """`compute()`'s value, computed at most once per transaction of `conn` for `key`."""
    tx = conn.get_transaction()
    if tx is None:
        return compute()
    held: tuple[Any, dict[Hashable, Any]] | None = conn.info.get(_KEY)
    if held is None or held[0] is not tx or not tx.is_active:
        held = (tx, {})
        conn.info[_KEY] = held
    memo = held[1]
    if key not in memo:
        memo[key] = compute()
    value: T = memo[key]
    return value
