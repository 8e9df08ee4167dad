"""REST routers of the features, one module each, mounted by `web.app.create_app`.

A module exposes `router(ctx: ApiContext) -> APIRouter`; paths are absolute
(`/api/v1/...`) and every route takes `dependencies=ctx.auth` (the API token).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException
from sqlalchemy.engine import Engine

from mailcase.config import Settings
from mailcase.errors import StorageError
from mailcase.metrics import Metrics
from mailcase.outbound.queue.enqueue import EnqueueHook

__all__ = ["ApiContext"]


@dataclass
class ApiContext:
    """What a router needs from the instance it serves."""

    engine: Engine
    settings: Settings
    metrics: Metrics
    auth: list[Any]
    on_addresses_changed: Callable[[], None] = field(default=lambda: None)
    #: Wakes the delivery engine after something was enqueued (set by `serve`).
    on_outbound_queued: Callable[[], None] = field(default=lambda: None)
    #: Run by every enqueue of the API (compliance BCC, suppression list; `platform`).
    enqueue_hooks: Sequence[EnqueueHook] = ()

    async def db(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run `fn(engine, *args, **kw)` in a worker thread; storage errors become 409."""
        try:
            return await asyncio.to_thread(fn, self.engine, *args, **kw)
        except StorageError as e:
            raise HTTPException(status_code=409, detail=str(e)) from None

    async def run(self, fn: Callable[..., Awaitable[Any]] | Callable[..., Any], *args: Any) -> Any:
        """Run any blocking callable in a worker thread."""
        return await asyncio.to_thread(fn, *args)
