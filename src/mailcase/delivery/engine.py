"""The delivery engine: takes messages from the outbound queue and delivers them (placeholder)."""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import Engine

from mailcase.config import Settings
from mailcase.metrics import Metrics

__all__ = ["DeliveryEngine"]


class DeliveryEngine:
    """Runs in `serve` beside the pipeline; `wake()` after something was enqueued."""

    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics | None = None) -> None:
        self.settings, self.engine, self.metrics = settings, engine, metrics
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Called on the event loop after an enqueue."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
