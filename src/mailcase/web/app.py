"""The HTTP side: REST API under /api/v1 and /metrics (token required), /healthz, /docs.

Handlers are thin: they validate input with pydantic, call the storage functions in a worker
thread (the database must never block the event loop the SMTP sessions share) and map
storage errors to clear 4xx answers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.engine import Engine

from mailcase import __version__
from mailcase.config import Settings
from mailcase.errors import StorageError
from mailcase.metrics import Metrics
from mailcase.outbound.queue.enqueue import EnqueueHook
from mailcase.plain import to_plain
from mailcase.smtp.address import AddressError, parse_mailbox
from mailcase.storage import addresses, emaillog, messages, tokens
from mailcase.web.api import ApiContext
from mailcase.web.api import automation as automation_api
from mailcase.web.api import bounces as bounces_api
from mailcase.web.api import cases as cases_api
from mailcase.web.api import dkim as dkim_api
from mailcase.web.api import outbound as outbound_api
from mailcase.web.api import sources as sources_api
from mailcase.web.api import tasks as tasks_api
from mailcase.web.api import users as users_api
from mailcase.web.docs import add_docs
from mailcase.web.download import ApiContentHeaders, download

__all__ = ["create_app"]

_bearer = HTTPBearer(auto_error=False)

#: The features' routers, included in this order (imported, not named: the layer contract
#: sees what the web layer uses).
_ROUTERS = (cases_api, automation_api, outbound_api, dkim_api, bounces_api, tasks_api,
            sources_api, users_api)


class AddressIn(BaseModel):
    address: str = Field(description="Receiving address, e.g. support@example.test")
    require_tls: bool = Field(False, description="Refuse senders that did not STARTTLS (530 5.7.0)")

    @field_validator("address")
    @classmethod
    def _valid(cls, v: str) -> str:
        try:
            return parse_mailbox(v.strip())
        except AddressError as e:
            raise ValueError(str(e)) from None


class AddressPatch(BaseModel):
    require_tls: bool


def create_app(
    engine: Engine,
    metrics: Metrics,
    *,
    on_addresses_changed: Callable[[], None] = lambda: None,
    exposition: Callable[[], bytes] | None = None,
    settings: Settings | None = None,
    on_outbound_queued: Callable[[], None] = lambda: None,
    enqueue_hooks: Sequence[EnqueueHook],
) -> FastAPI:
    """Build the app for one platform instance (several can live in one test process)."""
    app = FastAPI(
        title="mailcase",
        version=__version__,
        description="Self-hosted email platform: inbound gateway, email log, cases.",
        docs_url=None,  # FastAPI's pages load their assets from a CDN: web/docs.py instead
        redoc_url=None,
    )
    add_docs(app)
    app.add_middleware(ApiContentHeaders)  # nosniff and a CSP on every /api/ answer

    async def db(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, engine, *args, **kw)
        except StorageError as e:
            raise HTTPException(status_code=409, detail=str(e)) from None

    async def require_token(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(
                401,
                "API token required: send 'Authorization: Bearer <token>' "
                "(create one with `mailcase token create NAME`)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        name = await asyncio.to_thread(tokens.verify, engine, creds.credentials)
        if name is None:
            raise HTTPException(
                401, "invalid or revoked API token", headers={"WWW-Authenticate": "Bearer"}
            )
        return str(name)

    auth = [Depends(require_token)]

    # response_model: the documented body is the 200 one; the 503 is a response of its own.
    @app.get("/healthz", tags=["operations"], response_model=dict[str, str])
    async def healthz() -> dict[str, str] | JSONResponse:
        """Liveness and database reachability; no token needed."""
        try:
            await asyncio.to_thread(addresses.generation, engine)
        except Exception as e:  # noqa: BLE001 - report, do not crash
            return JSONResponse({"status": "error", "database": str(e)}, status_code=503)
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", dependencies=auth, tags=["operations"],
             response_class=PlainTextResponse)
    async def prometheus() -> Response:
        """Prometheus metrics; token required like the API (scrape config: `authorization:
        {credentials: <token>}`): they tell who could watch traffic how busy we are."""
        data = await asyncio.to_thread(exposition or metrics.exposition)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/addresses", dependencies=auth, tags=["addresses"])
    async def list_addresses() -> list[dict[str, Any]]:
        return to_plain(await db(addresses.list_addresses))  # type: ignore[no-any-return]

    @app.post("/api/v1/addresses", dependencies=auth, tags=["addresses"], status_code=201)
    async def add_address(body: AddressIn) -> dict[str, Any]:
        row = await db(addresses.add, body.address, require_tls=body.require_tls)
        on_addresses_changed()
        return to_plain(row)  # type: ignore[no-any-return]

    def _address(address: str) -> str:
        """The path's address, normalised; a 422 naming the problem if it is none (it used
        to escape as a ValueError: a 500 and a dropped connection)."""
        try:
            return addresses.normalize(address)
        except ValueError as e:
            raise HTTPException(
                422, f"{e}; use the full address, e.g. support@example.test"
            ) from None

    @app.get("/api/v1/addresses/{address}", dependencies=auth, tags=["addresses"])
    async def get_address(address: str) -> dict[str, Any]:
        address = _address(address)
        row = await db(addresses.get, address)
        if row is None:
            raise HTTPException(404, f"no receiving address {address!r}")
        return to_plain(row)  # type: ignore[no-any-return]

    @app.patch("/api/v1/addresses/{address}", dependencies=auth, tags=["addresses"])
    async def patch_address(address: str, body: AddressPatch) -> dict[str, Any]:
        address = _address(address)
        if await db(addresses.get, address) is None:
            raise HTTPException(404, f"no receiving address {address!r}")
        await db(addresses.set_require_tls, address, body.require_tls)
        on_addresses_changed()
        return to_plain(await db(addresses.get, address))  # type: ignore[no-any-return]

    @app.delete(
        "/api/v1/addresses/{address}", dependencies=auth, tags=["addresses"], status_code=204
    )
    async def delete_address(address: str) -> Response:
        address = _address(address)
        if not await db(addresses.remove, address):
            raise HTTPException(404, f"no receiving address {address!r}")
        on_addresses_changed()
        return Response(status_code=204)

    @app.get("/api/v1/email-log", dependencies=auth, tags=["email log"])
    async def email_log(
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        address: str | None = None,
        outcome: str | None = None,
        queue_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
        format: Literal["json", "csv"] = "json",
    ) -> Response:
        """Email log entries, newest first; `format=csv` for a CSV export. `outcome`: one of
        accepted, rejected, deferred, processed, quarantined, discarded, delivered, bounced,
        suppressed, failed (an unknown one is a 422 that lists them)."""
        if outcome is not None and outcome not in emaillog.OUTCOMES:
            raise HTTPException(
                422, f"unknown outcome {outcome!r}: one of {', '.join(emaillog.OUTCOMES)}"
            )
        rows = await db(
            emaillog.query,
            since=since,
            until=until,
            address=address,
            outcome=outcome,
            queue_id=queue_id,
            limit=limit,
        )
        if format == "csv":  # subjects and addresses a sender wrote: a download
            return download(emaillog.to_csv(rows), media_type="text/csv",
                            filename="email-log.csv")
        return Response(emaillog.to_json(rows), media_type="application/json")

    @app.get("/api/v1/messages", dependencies=auth, tags=["messages"])
    async def list_messages(
        state: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> list[dict[str, Any]]:
        """Stored inbound messages (without their content)."""
        return to_plain(await db(messages.list_messages, state=state, limit=limit))  # type: ignore[no-any-return]

    @app.get("/api/v1/messages/{queue_id}", dependencies=auth, tags=["messages"])
    async def get_message(queue_id: str) -> dict[str, Any]:
        row = await db(messages.get_message, queue_id)
        if row is None:
            raise HTTPException(404, f"no message with queue id {queue_id!r}")
        return to_plain(row)  # type: ignore[no-any-return]

    @app.get("/api/v1/messages/{queue_id}/raw", dependencies=auth, tags=["messages"])
    async def get_message_raw(queue_id: str) -> Response:
        """The stored message as received (our Received header first), as a message/rfc822
        download (never rendered by the browser)."""
        row = await db(messages.get_message, queue_id)
        if row is None:
            raise HTTPException(404, f"no message with queue id {queue_id!r}")
        return download(row.content, media_type="message/rfc822", filename=f"{queue_id}.eml")

    @app.post("/api/v1/messages/{queue_id}/retry", dependencies=auth, tags=["messages"])
    async def retry_message(queue_id: str) -> dict[str, int]:
        """Put a quarantined message back for processing."""
        n = await db(messages.retry_quarantined, queue_id)
        if not n:
            raise HTTPException(404, f"no quarantined message with queue id {queue_id!r}")
        return {"retried": int(n)}

    ctx = ApiContext(
        engine=engine,
        settings=settings if settings is not None else Settings(),
        metrics=metrics,
        auth=auth,
        on_addresses_changed=on_addresses_changed,
        on_outbound_queued=on_outbound_queued,
        enqueue_hooks=enqueue_hooks,
    )
    for module in _ROUTERS:
        app.include_router(module.router(ctx))

    @app.exception_handler(StorageError)
    async def _storage_error(_: Request, exc: StorageError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    return app
