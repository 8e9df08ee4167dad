"""The email log: one row per mail event, queried by people and exported as CSV or JSON.

Rows are plain dicts (keys: `COLUMNS`), because they go straight to the web API, CSV and
JSON. Times are aware UTC datetimes; `rcpt_to` is a list of addresses.

The SMTP path writes log entries through the spool (`Spool.store` / `Spool.log`); `append` is
for everyone else (pipeline, delivery, CLI).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, exists, func, insert, literal, or_, select
from sqlalchemy.orm import Session

from mailcase import plain
from mailcase.storage._records import DIRECTIONS, OUTCOMES, LogEntry, log_row
from mailcase.storage.db import begin_write
from mailcase.storage.models import email_log
from mailcase.storage.sql import json_array_values

__all__ = ["COLUMNS", "DIRECTIONS", "OUTCOMES", "append", "query", "to_csv", "to_json"]

_t = email_log

#: Keys of each row, in export order.
COLUMNS: tuple[str, ...] = tuple(c.name for c in _t.columns)

def append(target: Engine | Connection | Session, entries: Iterable[LogEntry]) -> int:
    """Write `entries` now (in `target`'s transaction, or a new one for an Engine)."""
    rows = [log_row(e) for e in entries]
    if not rows:
        return 0
    if isinstance(target, Engine):
        with begin_write(target) as conn:
            conn.execute(insert(_t), rows)
    else:
        target.execute(insert(_t), rows)
    return len(rows)


def query(
    engine: Engine,
    since: datetime | None = None,
    until: datetime | None = None,
    address: str | None = None,
    outcome: str | None = None,
    queue_id: str | None = None,
    limit: int = 1000,
    *,
    direction: str | None = None,
) -> list[dict[str, Any]]:
    """Log rows, newest first. `since` is inclusive, `until` exclusive; `address` matches the
    envelope sender or any recipient, ignoring case. An `outcome` or `direction` that does not
    exist raises ValueError naming the ones that do (never an empty answer that looks like
    "nothing happened")."""
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}: one of {', '.join(OUTCOMES)}")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}: one of {', '.join(DIRECTIONS)}")
    stmt = select(_t).order_by(_t.c.time.desc(), _t.c.id.desc()).limit(limit)
    if since is not None:
        stmt = stmt.where(_t.c.time >= since)
    if until is not None:
        stmt = stmt.where(_t.c.time < until)
    if outcome is not None:
        stmt = stmt.where(_t.c.outcome == outcome)
    if queue_id is not None:
        stmt = stmt.where(_t.c.queue_id == queue_id)
    if direction is not None:
        stmt = stmt.where(_t.c.direction == direction)
    if address is not None:
        wanted = address.strip().lower()
        rcpts = json_array_values(engine, _t.c.rcpt_to)
        any_rcpt = exists(
            select(literal(1)).select_from(rcpts).where(func.lower(rcpts.c.value) == wanted)
        )
        stmt = stmt.where(or_(func.lower(_t.c.mail_from) == wanted, any_rcpt))
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    for row in rows:
        row["rcpt_to"] = list(row["rcpt_to"] or [])
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def to_json(rows: Sequence[Mapping[str, Any]]) -> str:
    """A JSON array of the rows; times as ISO 8601 strings."""
    return json.dumps(
        [{k: _plain(v) for k, v in row.items()} for row in rows], ensure_ascii=False
    )


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV with a header line (`COLUMNS` order). Recipients are space-separated in one cell;
    text starting with a formula character gets a leading apostrophe (`plain.to_csv`, the
    renderer the CLI's --csv uses too)."""
    return plain.to_csv(rows, COLUMNS)
