"""REST routes of bounces: the suppression list and the bounces recorded."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response

from mailcase.outbound.bounces import suppression
from mailcase.plain import to_plain
from mailcase.web.api import ApiContext

__all__ = ["router"]


def router(ctx: ApiContext) -> APIRouter:
    """The routes, each behind `ctx.auth`."""
    r = APIRouter(dependencies=ctx.auth, tags=["bounces"])

    @r.get("/api/v1/bounces", tags=["bounces"])
    async def list_bounced(events: bool = False, limit: int = 1000) -> list[dict[str, Any]]:
        """The suppression list; `events=true`: every recorded bounce (hard and soft)."""
        limit = max(1, min(limit, 100000))
        if events:
            return to_plain(await ctx.db(suppression.list_events, limit=limit))  # type: ignore[no-any-return]
        return to_plain(await ctx.db(suppression.list_bounces, limit=limit))  # type: ignore[no-any-return]

    @r.delete("/api/v1/bounces/{address}", tags=["bounces"], status_code=204)
    async def clear_bounced(address: str) -> Response:
        """Take an address off the suppression list."""
        if not await ctx.db(suppression.clear, address):
            raise HTTPException(404, f"{address!r} is not on the suppression list")
        return Response(status_code=204)

    return r
