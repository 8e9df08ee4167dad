"""REST routes of users and queues, behind the API token (an admin credential).

Passwords are set through the API (`POST /api/v1/users` with `password`, or
`PUT /api/v1/users/{email}/password`) and never returned: records carry `can_log_in` instead.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from mailcase.features.users import service
from mailcase.web.api import ApiContext

__all__ = ["router"]


class UserIn(BaseModel):
    """A new user; without `password` the user cannot log in (owner / recipient only)."""

    email: str
    name: str = ""
    role: Literal["admin", "agent"] = "agent"
    password: str | None = Field(None, repr=False)
    time_zone: str = "UTC"


class UserPatch(BaseModel):
    """Changes to a user (deactivate instead of deleting: cases keep naming them)."""

    name: str | None = None
    role: Literal["admin", "agent"] | None = None
    active: bool | None = None
    time_zone: str | None = None


class PasswordIn(BaseModel):
    password: str | None = Field(None, repr=False, description="null removes the password")


class QueueIn(BaseModel):
    name: str
    email: str | None = None


def router(ctx: ApiContext) -> APIRouter:
    """The routes, each behind `ctx.auth`."""
    r = APIRouter()
    tags: list[str | Any] = ["users"]

    async def call(fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return await ctx.db(fn, *args, **kw)
        except service.UserError as e:
            raise HTTPException(422, str(e)) from None

    @r.get("/api/v1/users", dependencies=ctx.auth, tags=tags)
    async def list_users() -> list[dict[str, Any]]:
        """Every user, by address."""
        return [u.as_dict() for u in await ctx.db(service.list_users)]

    @r.post("/api/v1/users", status_code=201, dependencies=ctx.auth, tags=tags)
    async def add_user(body: UserIn) -> dict[str, Any]:
        user = await call(
            service.add_user, body.email, name=body.name, role=body.role,
            password=body.password, time_zone=body.time_zone,
        )
        return user.as_dict()  # type: ignore[no-any-return]

    @r.get("/api/v1/users/{email}", dependencies=ctx.auth, tags=tags)
    async def get_user(email: str) -> dict[str, Any]:
        user = await ctx.db(service.get_user, email)
        if user is None:
            raise HTTPException(404, f"no user {email}")
        return user.as_dict()  # type: ignore[no-any-return]

    @r.patch("/api/v1/users/{email}", dependencies=ctx.auth, tags=tags)
    async def patch_user(email: str, body: UserPatch) -> dict[str, Any]:
        user = await call(service.update_user, email, **body.model_dump())
        return user.as_dict()  # type: ignore[no-any-return]

    @r.put("/api/v1/users/{email}/password", dependencies=ctx.auth, tags=tags)
    async def put_password(email: str, body: PasswordIn) -> dict[str, Any]:
        user = await call(service.set_password, email, body.password)
        return user.as_dict()  # type: ignore[no-any-return]

    @r.get("/api/v1/queues", dependencies=ctx.auth, tags=tags)
    async def list_queues() -> list[dict[str, Any]]:
        return [q.as_dict() for q in await ctx.db(service.list_queues)]

    @r.post("/api/v1/queues", status_code=201, dependencies=ctx.auth, tags=tags)
    async def add_queue(body: QueueIn) -> dict[str, Any]:
        queue = await call(service.add_queue, body.name, email=body.email)
        return queue.as_dict()  # type: ignore[no-any-return]

    @r.put("/api/v1/queues/{name}/members/{email}", dependencies=ctx.auth, tags=tags)
    async def add_member(name: str, email: str) -> dict[str, Any]:
        return (await call(service.add_member, name, email)).as_dict()  # type: ignore[no-any-return]

    @r.delete("/api/v1/queues/{name}/members/{email}", dependencies=ctx.auth, tags=tags)
    async def remove_member(name: str, email: str) -> dict[str, Any]:
        return (await call(service.remove_member, name, email)).as_dict()  # type: ignore[no-any-return]

    return r
