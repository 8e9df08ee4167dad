"""REST routes of Email-to-Case: routing addresses, cases, case emails, replies, attachments.

All behind the API token. Changing routing addresses changes receiving addresses too, so the
SMTP side is told (`ctx.on_addresses_changed`); a reply wakes the delivery engine
(`ctx.on_outbound_queued`).

Inline images: the stored HTML keeps ``cid:`` sources (the sanitiser allows nothing remote);
the emails endpoint rewrites them to this API's attachment URLs, so a client that shows the
HTML with the token loads the images from here and from nowhere else.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field

from mailcase.features.cases.delivery_status import case_delivery
from mailcase.features.cases.store import cases as case_store
from mailcase.features.cases.store import contacts as contact_store
from mailcase.features.cases.store import emails as email_store
from mailcase.features.cases.store import routing as routing_store
from mailcase.features.tasks.service import list_tasks
from mailcase.plain import to_plain
from mailcase.web.api import ApiContext
from mailcase.web.download import download, safe_filename

__all__ = ["router"]


class RoutingIn(BaseModel):
    """A new routing address."""

    address: str
    name: str | None = None
    origin: str = "Email"
    priority: str = "Medium"
    owner: str | None = None
    queue: str | None = None
    accept_from: list[str] = Field(default_factory=list)
    task_status: str | None = None
    save_headers: bool = False
    require_tls: bool = False
    require_authenticated_sender: bool = False


class RoutingPatch(BaseModel):
    """Changes to a routing address; absent fields stay as they are."""

    name: str | None = None
    origin: str | None = None
    priority: str | None = None
    owner: str | None = None
    queue: str | None = None
    accept_from: list[str] | None = None
    task_status: str | None = None
    save_headers: bool | None = None
    require_tls: bool | None = None
    require_authenticated_sender: bool | None = None
    enabled: bool | None = None


class CasePatch(BaseModel):
    """Changes to a case."""

    status: Literal["New", "Working", "Escalated", "Closed"] | None = None
    priority: str | None = None
    owner: str | None = None
    queue: str | None = None


class ReplyIn(BaseModel):
    """A reply on a case (the thread token is added to subject and body)."""

    body: str
    html: str | None = None
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    from_address: str | None = None


class ContactIn(BaseModel):
    """A contact (cases from this address are linked to it)."""

    email: str
    name: str = ""


_CID = re.compile(r"""(src\s*=\s*["']?)cid:([^"'\s>]+)""", re.IGNORECASE)


def _link_cids(html: str, number: str, attachments: list[email_store.AttachmentRecord]) -> str:
    by_cid = {a.content_id.strip("<>"): a.id for a in attachments if a.content_id}
    if not by_cid or "cid:" not in html.lower():
        return html

    def sub(m: re.Match[str]) -> str:
        att = by_cid.get(m.group(2))
        if att is None:
            return m.group(0)
        return f"{m.group(1)}/api/v1/cases/{number}/attachments/{att}"

    return _CID.sub(sub, html)


def _number(number: str) -> str:
    try:
        return case_store.format_number(case_store.parse_number(number))
    except ValueError:
        raise HTTPException(404, f"no case {number!r}") from None


def router(ctx: ApiContext) -> APIRouter:
    """The routes, each behind `ctx.auth`."""
    r = APIRouter()
    tags: list[str | Any] = ["cases"]
    rtags: list[str | Any] = ["routing"]

    # ------------------------------------------------------------------ routing addresses
    @r.get("/api/v1/routing-addresses", dependencies=ctx.auth, tags=rtags)
    async def list_routing() -> list[dict[str, Any]]:
        return to_plain(await ctx.db(routing_store.list_routing))  # type: ignore[no-any-return]

    @r.post("/api/v1/routing-addresses", dependencies=ctx.auth, tags=rtags, status_code=201)
    async def add_routing(body: RoutingIn) -> dict[str, Any]:
        data = body.model_dump()
        address = data.pop("address")
        try:
            row = await ctx.db(routing_store.add_routing, address, **data)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        ctx.on_addresses_changed()
        return to_plain(row)  # type: ignore[no-any-return]

    @r.get("/api/v1/routing-addresses/{address}", dependencies=ctx.auth, tags=rtags)
    async def get_routing(address: str) -> dict[str, Any]:
        row = await ctx.db(routing_store.get_routing, address)
        if row is None:
            raise HTTPException(404, f"no routing address {address!r}")
        return to_plain(row)  # type: ignore[no-any-return]

    @r.patch("/api/v1/routing-addresses/{address}", dependencies=ctx.auth, tags=rtags)
    async def patch_routing(address: str, body: RoutingPatch) -> dict[str, Any]:
        changes = body.model_dump(exclude_unset=True)
        try:
            row = await ctx.db(routing_store.update_routing, address, **changes)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        if row is None:
            raise HTTPException(404, f"no routing address {address!r}")
        ctx.on_addresses_changed()
        return to_plain(row)  # type: ignore[no-any-return]

    @r.delete(
        "/api/v1/routing-addresses/{address}", dependencies=ctx.auth, tags=rtags, status_code=204
    )
    async def delete_routing(address: str) -> Response:
        if not await ctx.db(routing_store.delete_routing, address):
            raise HTTPException(404, f"no routing address {address!r}")
        ctx.on_addresses_changed()
        return Response(status_code=204)

    # ------------------------------------------------------------------ contacts
    @r.get("/api/v1/contacts", dependencies=ctx.auth, tags=tags)
    async def list_contacts(
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        return to_plain(await ctx.db(contact_store.list_contacts, limit))  # type: ignore[no-any-return]

    @r.post("/api/v1/contacts", dependencies=ctx.auth, tags=tags, status_code=201)
    async def add_contact(body: ContactIn) -> dict[str, Any]:
        try:
            row = await ctx.db(contact_store.add_contact, body.email, body.name)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        return to_plain(row)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ cases
    @r.get("/api/v1/cases", dependencies=ctx.auth, tags=tags)
    async def list_cases(
        status: Annotated[list[str] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        before: str | None = None,
    ) -> list[dict[str, Any]]:
        """Cases, newest first; `status` may be repeated; `before` (a number) pages."""
        try:
            before_n = None if before is None else case_store.parse_number(before)
            rows = await ctx.db(
                case_store.list_cases, tuple(status or ()), limit=limit, before_number=before_n
            )
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        return to_plain(rows)  # type: ignore[no-any-return]

    @r.get("/api/v1/cases/{number}", dependencies=ctx.auth, tags=tags)
    async def get_case(number: str) -> dict[str, Any]:
        row = await ctx.db(case_store.get_case, _number(number))
        if row is None:
            raise HTTPException(404, f"no case {number!r}")
        out: dict[str, Any] = to_plain(row)
        out["tasks"] = [t.as_dict() for t in await ctx.db(list_tasks, case_id=row.id)]
        return out

    @r.patch("/api/v1/cases/{number}", dependencies=ctx.auth, tags=tags)
    async def patch_case(number: str, body: CasePatch) -> dict[str, Any]:
        try:
            row = await ctx.db(
                case_store.update_case,
                _number(number),
                status=body.status,
                priority=body.priority,
                owner=body.owner,
                queue=body.queue,
            )
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        if row is None:
            raise HTTPException(404, f"no case {number!r}")
        return to_plain(row)  # type: ignore[no-any-return]

    @r.get("/api/v1/cases/{number}/emails", dependencies=ctx.auth, tags=tags)
    async def list_emails(number: str) -> list[dict[str, Any]]:
        n = _number(number)
        rows = await ctx.db(email_store.list_emails, n)
        if rows is None:
            raise HTTPException(404, f"no case {number!r}")
        deliveries = await ctx.db(case_delivery, n) or {}
        out = []
        for e in rows:
            item: dict[str, Any] = to_plain(e)
            if e.direction == "outbound":
                d = deliveries.get(e.id)
                item["delivery"] = None if d is None else to_plain(d)
            item["html_body"] = _link_cids(e.html_body, n, e.attachments)
            for a in item["attachments"]:
                a["url"] = f"/api/v1/cases/{n}/attachments/{a['id']}"
            out.append(item)
        return out

    @r.post("/api/v1/cases/{number}/emails", dependencies=ctx.auth, tags=tags, status_code=201)
    async def reply(number: str, body: ReplyIn) -> dict[str, Any]:
        """Reply on the case: queued for delivery, thread token in subject and body."""
        from mailcase.features.cases.reply import ReplyError, send_reply

        n = _number(number)
        try:
            result = await ctx.run(
                lambda: send_reply(
                    ctx.engine,
                    ctx.settings,
                    n,
                    body=body.body,
                    html=body.html,
                    to=body.to,
                    cc=body.cc,
                    from_address=body.from_address,
                    hooks=ctx.enqueue_hooks,
                )
            )
        except ReplyError as e:
            code = 404 if str(e).startswith("no case") else 422
            raise HTTPException(code, str(e)) from None
        ctx.on_outbound_queued()
        return to_plain(result)  # type: ignore[no-any-return]

    @r.get(
        "/api/v1/cases/{number}/attachments/{attachment_id}", dependencies=ctx.auth, tags=tags
    )
    async def get_attachment(number: str, attachment_id: int) -> Response:
        """The attachment's bytes; always as a download (never rendered by the browser)."""
        got = await ctx.db(email_store.get_attachment, _number(number), attachment_id)
        if got is None:
            raise HTTPException(404, f"no attachment {attachment_id} on case {number!r}")
        att, data = got
        return download(data, media_type=att.content_type,
                        filename=safe_filename(att.filename, "attachment"))

    return r
