"""REST routes of mailbox sources (issue 19, the Email-to-Case agent).

- GET /api/v1/sources, POST /api/v1/sources
- GET/DELETE /api/v1/sources/{source}, POST /api/v1/sources/{source}/pause|resume|test
- PUT /api/v1/sources/{source}/trusted: whose Authentication-Results count (issue 19)

Secrets are write-only: accepted on POST, never returned. Plaintext needs `allow_plaintext`.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from mailcase.plain import to_plain
from mailcase.sources import store
from mailcase.sources.imap import SourceError
from mailcase.sources.probe import probe
from mailcase.web.api import ApiContext

__all__ = ["router"]


class SourceIn(BaseModel):
    """A mailbox source to add."""

    name: str
    host: str
    port: int | None = Field(None, ge=1, le=65535, description="Default 993 (tls) or 143.")
    security: Literal["tls", "starttls", "plaintext"] = "tls"
    allow_plaintext: bool = Field(False, description="Required with security=plaintext.")
    username: str
    secret: str = Field(description="Password, or the OAuth2 bearer token with auth=xoauth2.")
    auth: Literal["password", "xoauth2"] = "password"
    folders: list[str] = Field(default_factory=lambda: ["INBOX"])
    address: str = Field(description="Routing address its mail is treated as arriving at.")
    after: Literal["seen", "move", "delete"] = "seen"
    move_to: str | None = None
    paused: bool = False
    trusted_authserv_ids: list[str] = Field(
        default_factory=list, max_length=20,
        description="authserv-ids of the mailbox server whose Authentication-Results (and ARC "
                    "sets sealed by its domain) count for this mail's sender authentication.")
    skip_to: str | None = Field(
        None, description="Folder for messages that cannot be taken; default: left in place.")


class TrustIn(BaseModel):
    """The authserv-ids of the mailbox server whose verdicts count (empty: none)."""

    trusted_authserv_ids: list[str] = Field(max_length=20)


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return to_plain({**row, "plaintext": row["security"] == "plaintext"})  # type: ignore[no-any-return]


def _missing(e: SourceError) -> HTTPException:
    text = str(e)
    return HTTPException(status_code=404 if text.startswith("no source") else 400, detail=text)


def _add(engine: Engine, settings: Any, body: SourceIn) -> dict[str, Any]:
    return store.add_source(
        engine, settings, name=body.name, host=body.host,
        port=body.port or (993 if body.security == "tls" else 143), security=body.security,
        username=body.username, secret=body.secret, auth=body.auth, folders=body.folders,
        address=body.address, after=body.after, move_to=body.move_to, paused=body.paused,
        trusted_authserv_ids=body.trusted_authserv_ids, skip_to=body.skip_to)


def router(ctx: ApiContext) -> APIRouter:
    """The routes, each behind `ctx.auth`."""
    r = APIRouter()
    auth = ctx.auth

    @r.get("/api/v1/sources", dependencies=auth, tags=["sources"])
    async def list_sources() -> list[dict[str, Any]]:
        return [_shown(s) for s in await ctx.db(store.list_sources)]

    @r.post("/api/v1/sources", dependencies=auth, tags=["sources"], status_code=201)
    async def add(body: SourceIn) -> dict[str, Any]:
        if body.security == "plaintext" and not body.allow_plaintext:
            raise HTTPException(status_code=400, detail="security=plaintext sends the password "
                                "unencrypted: set allow_plaintext if you accept that")
        try:
            return _shown(await ctx.db(_add, ctx.settings, body))
        except SourceError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None

    @r.get("/api/v1/sources/{source}", dependencies=auth, tags=["sources"])
    async def show(source: str) -> dict[str, Any]:
        """The source, with the messages it could not take (newest first)."""
        try:
            row = _shown(await ctx.db(store.get_source, source))
        except SourceError as e:
            raise _missing(e) from None
        row["skipped"] = to_plain(await ctx.db(store.skipped, row["id"]))
        return row

    @r.delete("/api/v1/sources/{source}", dependencies=auth, tags=["sources"], status_code=204)
    async def remove(source: str) -> Response:
        try:
            await ctx.db(store.remove_source, source)
        except SourceError as e:
            raise _missing(e) from None
        return Response(status_code=204)

    @r.post("/api/v1/sources/{source}/pause", dependencies=auth, tags=["sources"])
    async def pause(source: str) -> dict[str, Any]:
        try:
            return _shown(await ctx.db(store.set_paused, source, True))
        except SourceError as e:
            raise _missing(e) from None

    @r.post("/api/v1/sources/{source}/resume", dependencies=auth, tags=["sources"])
    async def resume(source: str) -> dict[str, Any]:
        try:
            return _shown(await ctx.db(store.set_paused, source, False))
        except SourceError as e:
            raise _missing(e) from None

    @r.put("/api/v1/sources/{source}/trusted", dependencies=auth, tags=["sources"])
    async def trust(source: str, body: TrustIn) -> dict[str, Any]:
        """Replace the authserv-ids whose verdicts count for this source's mail."""
        try:
            return _shown(await ctx.db(store.set_trusted, source, body.trusted_authserv_ids))
        except SourceError as e:
            raise _missing(e) from None

    @r.post("/api/v1/sources/{source}/test", dependencies=auth, tags=["sources"])
    async def test(source: str) -> dict[str, Any]:
        """Connect, log in, count; `ok` false with the reason when a step fails."""
        try:
            lines = await ctx.db(probe, ctx.settings, source)
        except SourceError as e:
            if str(e).startswith("no source"):
                raise _missing(e) from None
            return {"ok": False, "error": str(e)}
        return {"ok": True, "lines": lines}

    return r
