"""Bulk INSERTs on SQLite through the sqlite3 cursor, for the hot paths only.

Why not SQLAlchemy's executemany here: for each row it builds the parameters in Python
(`construct_params`, bind processors, the execution context), which cost more CPU than SQLite's
own insert, and on the accept path and in the pipeline that CPU is taken from the SMTP sessions
(measured: half of the pipeline's time per message went there). This does the one part that
matters, the same way: every value goes through its column's own bind processor, so rows are
stored exactly as SQLAlchemy stores them and read back the same. PostgreSQL keeps SQLAlchemy
(its executemany is already one round trip with insertmanyvalues).

Only the columns present in the rows are inserted; the others get their server default. A
column with a Python-side default must therefore be given in every row (checked when the
statement is built), or it would silently be NULL.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect

__all__ = ["RawInsert", "raw_insert"]


class RawInsert:
    """One prepared INSERT of `columns` into `table` on SQLite."""

    def __init__(
        self, table: Table, columns: Sequence[str], dialect: Dialect, *,
        skip_conflicts: bool = False,
    ) -> None:
        if dialect.name != "sqlite":
            raise ValueError("RawInsert is for SQLite; use SQLAlchemy's insert() elsewhere")
        missing = [
            c.name for c in table.columns
            if c.name not in columns and c.default is not None and not c.primary_key
        ]
        if missing:
            raise ValueError(f"{table.name}: rows must give {missing} (Python-side defaults)")
        self.columns = tuple(columns)
        procs = [
            table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
        ]
        # Only a few columns have a bind processor (dates, JSON, booleans): the values are
        # taken in one C call and only those few are converted (a Python loop over every
        # column was most of the spool writer's CPU per message).
        self._convert = [(i, proc) for i, proc in enumerate(procs) if proc is not None]
        self._nulls = dict.fromkeys(self.columns)
        getter = operator.itemgetter(*self.columns)
        self._values: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
            getter if len(self.columns) > 1 else lambda row: (getter(row),)
        )
        conflict = " ON CONFLICT DO NOTHING" if skip_conflicts else ""
        self.sql = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608 - names from our metadata
            f"VALUES ({', '.join('?' * len(columns))}){conflict}"
        )

    def params(self, row: Mapping[str, Any]) -> Sequence[Any]:
        """The bound values of `row`, in column order (a column `row` lacks is NULL)."""
        values = self._values({**self._nulls, **row})
        if not self._convert:
            return values
        out = list(values)
        for i, proc in self._convert:
            value = out[i]
            if value is not None:
                out[i] = proc(value)
        return out

    def execute(self, cursor: Any, row: Mapping[str, Any]) -> int:
        """Insert one row; returns its rowid."""
        cursor.execute(self.sql, self.params(row))
        return int(cursor.lastrowid)

    def executemany(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert `rows` in `conn`'s current transaction."""
        raw: Any = conn.connection.driver_connection
        raw.executemany(self.sql, [self.params(r) for r in rows])


@lru_cache(maxsize=64)
def _cached(
    table: Table, columns: tuple[str, ...], dialect: Dialect, skip_conflicts: bool
) -> RawInsert:
    return RawInsert(table, columns, dialect, skip_conflicts=skip_conflicts)


def raw_insert(
    table: Table, columns: Sequence[str], dialect: Dialect, *, skip_conflicts: bool = False
) -> RawInsert:
    """A cached `RawInsert` for this table, columns and dialect."""
    return _cached(table, tuple(columns), dialect, skip_conflicts)
