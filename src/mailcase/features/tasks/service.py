"""Creating, listing and updating tasks (SQLAlchemy Core, both engines).

`create_task` writes inside the caller's transaction, so a task made for a new case commits
(or rolls back) together with the case: the pipeline's exactly-once processing then gives
exactly one task per case.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, insert, select, update

from mailcase.features.cases.events import CaseCreated
from mailcase.features.cases.models import cases
from mailcase.storage.db import begin_write
from mailcase.storage.models import utcnow

from .models import tasks

__all__ = [
    "DESCRIPTION_LIMIT",
    "SUBJECT_LIMIT",
    "TaskRecord",
    "create_task",
    "on_case_created",
    "get_task",
    "list_tasks",
    "set_status",
    "task_subject",
]

#: Longest task subject (the case subject is cut, with an ellipsis, to fit).
SUBJECT_LIMIT = 255
#: How much of the case description a task copies.
DESCRIPTION_LIMIT = 1000
_STATUS_LIMIT = 64


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task as read back, with the number of its case (zero-padded) when it has one."""

    id: int
    subject: str
    status: str
    priority: str
    owner: str | None
    case_id: int | None
    case_number: str | None
    description: str
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601)."""
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        d["updated_at"] = self.updated_at.isoformat()
        return d


def task_subject(case_subject: str) -> str:
    """ "Email: <case subject>", cut to `SUBJECT_LIMIT` characters with an ellipsis."""
    subject = "Email: " + " ".join(case_subject.split())
    if len(subject) > SUBJECT_LIMIT:
        subject = subject[: SUBJECT_LIMIT - 1].rstrip() + "…"
    return subject


def on_case_created(conn: Connection, event: CaseCreated) -> None:
    """The routing address's "create a task with status X": in the case's transaction."""
    if event.task_status:
        create_task(
            conn,
            subject=task_subject(event.subject),
            status=event.task_status,
            priority=event.priority,
            owner=event.owner or event.queue,
            case_id=event.case_id,
            description=event.description,
        )


def _check_status(status: str) -> str:
    value = " ".join(status.split())
    if not value:
        raise ValueError("task status must not be empty (e.g. 'Not Started')")
    if len(value) > _STATUS_LIMIT:
        raise ValueError(f"task status is longer than {_STATUS_LIMIT} characters")
    return value


def create_task(
    conn: Connection,
    *,
    subject: str,
    status: str,
    priority: str = "Medium",
    owner: str | None = None,
    case_id: int | None = None,
    description: str = "",
) -> int:
    """Insert one task in the caller's transaction; returns its id. Over-long values are cut
    (a blank status becomes "Not Started") rather than refused."""
    now = utcnow()
    result = conn.execute(
        insert(tasks)
        .values(
            subject=subject[:SUBJECT_LIMIT],
            # never fail the caller's transaction (a new case) over a routing setting
            status=(" ".join(status.split()) or "Not Started")[:_STATUS_LIMIT],
            priority=priority,
            owner=owner,
            case_id=case_id,
            description=description[:DESCRIPTION_LIMIT],
            created_at=now,
            updated_at=now,
        )
        .returning(tasks.c.id)
    )
    return int(result.scalar_one())


def _select() -> Any:
    return select(tasks, cases.c.number.label("case_number")).select_from(
        tasks.outerjoin(cases, cases.c.id == tasks.c.case_id)
    )


def _record(row: Row[Any]) -> TaskRecord:
    m = row._mapping
    number = m["case_number"]
    return TaskRecord(
        id=int(m["id"]),
        subject=m["subject"],
        status=m["status"],
        priority=m["priority"],
        owner=m["owner"],
        case_id=None if m["case_id"] is None else int(m["case_id"]),
        case_number=None if number is None else str(int(number)).zfill(8),
        description=m["description"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def list_tasks(
    engine: Engine,
    *,
    status: str | None = None,
    case_id: int | None = None,
    case_number: int | None = None,
    limit: int = 100,
) -> list[TaskRecord]:
    """Tasks, newest first; filtered by status, case id or case number."""
    stmt = _select().order_by(tasks.c.id.desc()).limit(max(1, min(limit, 10_000)))
    if status is not None:
        stmt = stmt.where(tasks.c.status == " ".join(status.split()))
    if case_id is not None:
        stmt = stmt.where(tasks.c.case_id == case_id)
    if case_number is not None:
        stmt = stmt.where(cases.c.number == case_number)
    with engine.connect() as conn:
        return [_record(r) for r in conn.execute(stmt).all()]


def get_task(engine: Engine, task_id: int) -> TaskRecord | None:
    """One task, or None."""
    with engine.connect() as conn:
        row = conn.execute(_select().where(tasks.c.id == task_id)).first()
    return None if row is None else _record(row)


def set_status(engine: Engine, task_id: int, status: str) -> TaskRecord | None:
    """Change a task's status; None when there is no such task. ValueError on a bad status."""
    value = _check_status(status)
    with begin_write(engine) as conn:
        done = conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id)
            .values(status=value, updated_at=utcnow())
        ).rowcount
    return get_task(engine, task_id) if done else None
