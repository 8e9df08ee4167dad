"""REST routes of DKIM keys.

A private key never leaves the server: the routes show the public DNS record only.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from mailcase.outbound import dkim
from mailcase.plain import to_plain
from mailcase.web.api import ApiContext

__all__ = ["router"]


class DKIMKeyIn(BaseModel):
    domain: str = Field(description="Sending domain (the From header's domain).")
    selector: str | None = Field(None, description="Selector; default: dkim.selector.")
    algorithm: Literal["rsa", "ed25519"] = Field("rsa", description="RSA-2048 or Ed25519.")


def router(ctx: ApiContext) -> APIRouter:
    """The routes, each behind `ctx.auth`."""
    r = APIRouter(dependencies=ctx.auth, tags=["dkim"])

    def _bad(e: dkim.DKIMError) -> HTTPException:
        status = 404 if "has no" in str(e) else 409 if "already" in str(e) else 422
        return HTTPException(status, str(e))

    @r.get("/api/v1/dkim-keys", tags=["dkim"])
    async def list_dkim_keys(domain: str | None = None) -> list[dict[str, Any]]:
        """Keys with their DNS record, state and last check (never the private key)."""
        try:
            return to_plain(await ctx.db(dkim.list_keys, domain))  # type: ignore[no-any-return]
        except dkim.DKIMError as e:
            raise _bad(e) from None

    @r.post("/api/v1/dkim-keys", tags=["dkim"], status_code=201)
    async def create_dkim_key(body: DKIMKeyIn) -> dict[str, Any]:
        """Generate a key (pending until its DNS record, in `dns_record`, is found)."""
        try:
            info = await ctx.db(dkim.create_key, ctx.settings, body.domain,
                                selector=body.selector, algorithm=body.algorithm)
        except dkim.DKIMError as e:
            raise _bad(e) from None
        return to_plain(info)  # type: ignore[no-any-return]

    @r.post("/api/v1/dkim-keys/{domain}/check", tags=["dkim"])
    async def check_dkim_keys(domain: str) -> dict[str, Any]:
        """Look up the records of the domain's keys; the newest matching one signs."""
        try:
            results = await ctx.db(dkim.check_domain, ctx.settings, domain)
            keys = await ctx.db(dkim.list_keys, domain)
        except dkim.DKIMError as e:
            raise _bad(e) from None
        return {"results": to_plain(results), "keys": to_plain(keys)}

    @r.post("/api/v1/dkim-keys/{domain}/rotate", tags=["dkim"], status_code=201)
    async def rotate_dkim_key(domain: str) -> dict[str, Any]:
        """Start a rotation: a new key on the alternate selector (publish its record)."""
        try:
            info = await ctx.db(dkim.rotate, ctx.settings, domain)
        except dkim.DKIMError as e:
            raise _bad(e) from None
        return to_plain(info)  # type: ignore[no-any-return]

    return r
