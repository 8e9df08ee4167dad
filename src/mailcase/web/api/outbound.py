"""REST routes of this feature (placeholder until the feature lands)."""

from __future__ import annotations

from fastapi import APIRouter

from mailcase.web.api import ApiContext

__all__ = ["router"]


def router(ctx: ApiContext) -> APIRouter:
    """The routes, each behind `ctx.auth`."""
    return APIRouter()
