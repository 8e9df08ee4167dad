"""REST routes of the outbound queue and Email Relay.

- GET /api/v1/outbound, GET /api/v1/outbound/{queue_id}, POST /api/v1/outbound/{queue_id}/retry
- POST /api/v1/outbound: queue a message (JSON: from, to, subject, text; or eml as text)
- GET/POST /api/v1/relays, GET/DELETE /api/v1/relays/{relay}
- GET/POST /api/v1/relay-filters, DELETE /api/v1/relay-filters/{id}

Relay passwords are write-only: accepted on POST, never returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from mailcase.config import OutboundTLSMode
from mailcase.delivery import relays as relay_store
from mailcase.outbound.queue import enqueue as queue_enqueue
from mailcase.outbound.queue import views as queue_views
from mailcase.plain import to_plain
from mailcase.storage.db import begin_write
from mailcase.web.api import ApiContext

__all__ = ["router"]



class OutboundIn(BaseModel):
    """A message to queue: either `eml` (a complete message) or from/to/subject/text."""

    mail_from: str = Field(alias="from")
    to: list[str]
    subject: str = ""
    text: str = ""
    eml: str | None = None
    category: Literal["system", "auto", "user"] = "user"


class RelayIn(BaseModel):
    name: str
    host: str = Field(description="Host name, IP address, or mx:DOMAIN.")
    port: int = Field(25, ge=1, le=65535)
    tls_mode: OutboundTLSMode = "preferred"
    auth_mechanism: Literal["PLAIN", "LOGIN"] | None = None
    username: str | None = None
    password: str | None = Field(None, description="Write-only; never returned.")
    active: bool = True


class FilterIn(BaseModel):
    relay: str = Field(description="Relay name or id.")
    sender_pattern: str = "*"
    recipient_pattern: str = "*"
    priority: int | None = Field(
        None, description="Lower is tried first; unique (a taken one is refused with 422). "
        "Empty: after every existing filter (highest + 10; 100 for the first).")
    active: bool = True


def _enqueue(engine: Engine, body: OutboundIn, hooks: Sequence[queue_enqueue.EnqueueHook]) -> str:
    if body.eml is not None:
        from mailcase.outbound.minimum import complete_message

        # The RFC 5322 minimum, as `mailcase send --eml`: a missing From/Date/Message-ID is
        # added; what is no email raises MessageRefusedError (a ValueError: 422).
        content = complete_message(queue_enqueue.normalize_content(body.eml.encode("utf-8")),
                                   envelope_from=body.mail_from.strip()).content
    else:
        from mailcase.outbound.compose import OutgoingEmail, compose

        if not body.subject.strip() and not body.text.strip():
            raise ValueError("nothing to send: give a subject or a text (or a whole eml)")

        content = compose(OutgoingEmail(from_addr=body.mail_from, to=tuple(body.to),
                                        subject=body.subject, text=body.text))
    with begin_write(engine) as conn:
        return queue_enqueue.enqueue(conn, mail_from=body.mail_from, rcpt_to=body.to,
                                     content=content, category=body.category, source="api",
                                     hooks=hooks)


def router(ctx: ApiContext) -> APIRouter:
    """The routes, each behind `ctx.auth`."""
    r = APIRouter()
    auth = ctx.auth

    @r.get("/api/v1/outbound", dependencies=auth, tags=["outbound"])
    async def list_outbound(
        state: Literal["queued", "held", "delivered", "bounced"] | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        """The outbound queue, newest first, with each recipient's state."""
        return to_plain(await ctx.db(queue_views.list_messages, state=state, limit=limit))  # type: ignore[no-any-return]

    @r.post("/api/v1/outbound", dependencies=auth, tags=["outbound"], status_code=201)
    async def send(body: OutboundIn) -> dict[str, Any]:
        """Queue a message for delivery."""
        try:
            qid = await ctx.db(_enqueue, body, ctx.enqueue_hooks)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        ctx.on_outbound_queued()
        return {"queue_id": qid}

    @r.get("/api/v1/outbound/{queue_id}", dependencies=auth, tags=["outbound"])
    async def show_outbound(queue_id: str) -> dict[str, Any]:
        """One message with its recipients and every attempt (TLS facts, stage, reply)."""
        m = await ctx.db(queue_views.show_message, queue_id)
        if m is None:
            raise HTTPException(404, f"no outbound message {queue_id!r}")
        return to_plain(m)  # type: ignore[no-any-return]

    @r.post("/api/v1/outbound/{queue_id}/retry", dependencies=auth, tags=["outbound"])
    async def retry(queue_id: str) -> dict[str, Any]:
        """Make a queued message due now."""
        if not await ctx.db(queue_views.retry_now, queue_id):
            raise HTTPException(
                404, f"no queued message {queue_id!r} (delivered, bounced and held mail is "
                "not retried)")
        ctx.on_outbound_queued()
        return {"queue_id": queue_id, "due": "now"}

    @r.get("/api/v1/relays", dependencies=auth, tags=["relays"])
    async def list_relays() -> list[dict[str, Any]]:
        """Relays (passwords are never returned)."""
        return to_plain(await ctx.db(relay_store.list_relays))  # type: ignore[no-any-return]

    @r.post("/api/v1/relays", dependencies=auth, tags=["relays"], status_code=201)
    async def add_relay(body: RelayIn) -> dict[str, Any]:
        """Add a relay; AUTH forces TLS mode required_verify."""
        try:
            row = await ctx.db(
                relay_store.add_relay, ctx.settings, name=body.name, host=body.host, port=body.port,
                tls_mode=body.tls_mode, auth_mechanism=body.auth_mechanism,
                username=body.username, password=body.password, active=body.active,
            )
        except HTTPException as e:  # RelayError is a StorageError: ctx.db made it a 409
            raise HTTPException(422 if "exists" not in str(e.detail) else 409,
                                e.detail) from None
        return to_plain(row)  # type: ignore[no-any-return]

    @r.get("/api/v1/relays/{relay}", dependencies=auth, tags=["relays"])
    async def get_relay(relay: str) -> dict[str, Any]:
        try:
            return to_plain(await ctx.db(relay_store.get_relay, relay))  # type: ignore[no-any-return]
        except HTTPException as e:
            raise HTTPException(404, e.detail) from None

    @r.delete("/api/v1/relays/{relay}", dependencies=auth, tags=["relays"], status_code=204)
    async def delete_relay(relay: str) -> Response:
        try:
            await ctx.db(relay_store.remove_relay, relay)
        except HTTPException as e:
            raise HTTPException(404, e.detail) from None
        return Response(status_code=204)

    @r.get("/api/v1/relay-filters", dependencies=auth, tags=["relays"])
    async def list_filters() -> list[dict[str, Any]]:
        """Email domain filters in match order (first match wins)."""
        return to_plain(await ctx.db(relay_store.list_filters))  # type: ignore[no-any-return]

    @r.post("/api/v1/relay-filters", dependencies=auth, tags=["relays"], status_code=201)
    async def add_filter(body: FilterIn) -> dict[str, Any]:
        try:
            row = await ctx.db(
                relay_store.add_filter, relay=body.relay, sender=body.sender_pattern,
                recipient=body.recipient_pattern, priority=body.priority, active=body.active,
            )
        except HTTPException as e:
            raise HTTPException(422, e.detail) from None
        return to_plain(row)  # type: ignore[no-any-return]

    @r.delete("/api/v1/relay-filters/{filter_id}", dependencies=auth, tags=["relays"],
              status_code=204)
    async def delete_filter(filter_id: int) -> Response:
        try:
            await ctx.db(relay_store.remove_filter, filter_id)
        except HTTPException as e:
            raise HTTPException(404, e.detail) from None
        return Response(status_code=204)

    return r
