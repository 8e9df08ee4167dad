"""REST routes of tasks: list them (by status or case) and change their status.

All behind the API token. Tasks are made by Email-to-Case for new cases when the routing
address has a task status; a case's tasks are also in GET /api/v1/cases/{number}.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from mailcase.features.cases.store.cases import parse_number
from mailcase.features.tasks import service
from mailcase.web.api import ApiContext

__all__ = ["router"]


class TaskPatch(BaseModel):
    """Changes to a task."""

    status: str


def router(ctx: ApiContext) -> APIRouter:
    """The routes, each behind `ctx.auth`."""
    r = APIRouter()
    tags: list[str | Any] = ["tasks"]

    @r.get("/api/v1/tasks", dependencies=ctx.auth, tags=tags)
    async def list_tasks(
        status: str | None = None,
        case: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        """Tasks, newest first; `status` and `case` (a case number) filter."""
        try:
            number = None if case is None else parse_number(case)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        items = await ctx.db(service.list_tasks, status=status, case_number=number, limit=limit)
        return [t.as_dict() for t in items]

    @r.get("/api/v1/tasks/{task_id}", dependencies=ctx.auth, tags=tags)
    async def get_task(task_id: int) -> dict[str, Any]:
        task = await ctx.db(service.get_task, task_id)
        if task is None:
            raise HTTPException(404, f"no task {task_id}")
        return task.as_dict()  # type: ignore[no-any-return]

    @r.patch("/api/v1/tasks/{task_id}", dependencies=ctx.auth, tags=tags)
    async def patch_task(task_id: int, body: TaskPatch) -> dict[str, Any]:
        try:
            task = await ctx.db(service.set_status, task_id, body.status)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        if task is None:
            raise HTTPException(404, f"no task {task_id}")
        return task.as_dict()  # type: ignore[no-any-return]

    return r
