"""Helpers for delivery tests: settings pointing at local peers, enqueue, run the engine.

The engine runs in the test's event loop (a real `DeliveryEngine` against a real database,
real DNS server and real SMTP servers on loopback) until the queue has nothing due, bounded
in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from mailcase.config import Settings
from mailcase.delivery.engine import DeliveryEngine
from mailcase.outbound.models import outbound_messages
from mailcase.outbound.queue import enqueue as queue_enqueue
from mailcase.outbound.queue import views as queue_views
from mailcase.storage.db import begin_write

__all__ = ["delivery_settings", "enqueue_many", "message", "run_until_settled", "show"]


def delivery_settings(tmp: Path, dns_address: str, *, mx_port: int, **delivery: Any) -> Settings:
    """Settings with the resolver on the test DNS server and MX delivery to `mx_port`."""
    d: dict[str, Any] = {
        "mx_port": mx_port, "poll_interval": 0.05, "connect_timeout": 5.0,
        "command_timeout": 15.0,
    }
    d.update(delivery)
    return Settings(
        data_dir=tmp,
        dns={"nameservers": [dns_address], "timeout": 2.0},
        server={"hostname": "mailcase.test"},
        delivery=d,
    )


def message(n: int | str = 1, *, domain: str = "sender.test", body: bytes = b"Hello.\r\n"
            ) -> bytes:
    return (
        f"From: a@{domain}\r\nTo: b@example.net\r\nSubject: test {n}\r\n"
        f"Message-ID: <m{n}@{domain}>\r\n\r\n"
    ).encode() + body


def enqueue_many(engine: Engine, n: int, *, mail_from: str = "a@sender.test",
                 rcpt_to: Sequence[str] = ("b@example.net",), category: str = "user",
                 source: str | None = None) -> list[str]:
    ids: list[str] = []
    with begin_write(engine) as conn:
        for i in range(n):
            ids.append(queue_enqueue.enqueue(conn, mail_from=mail_from, rcpt_to=rcpt_to,
                                             content=message(i), category=category, source=source))
    return ids


def _due_or_busy(engine: Engine, eng: DeliveryEngine) -> bool:
    if eng.busy:
        return True
    m = outbound_messages
    with engine.connect() as conn:
        due = conn.execute(
            select(func.count()).where(m.c.state == "queued",
                                       m.c.next_attempt_at <= eng.clock())
        ).scalar_one()
    return bool(due)


async def run_until_settled(eng: DeliveryEngine, *, limit: float = 60.0) -> None:
    """Run the engine until nothing is due or in flight (then stop it)."""
    task = asyncio.create_task(eng.run())
    try:
        deadline = time.monotonic() + limit
        await asyncio.sleep(0.05)
        while time.monotonic() < deadline:
            if task.done():
                task.result()
            busy = await asyncio.to_thread(_due_or_busy, eng.engine, eng)
            if not busy:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"delivery did not settle within {limit}s")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def show(engine: Engine, qid: str) -> dict[str, Any]:
    out = queue_views.show_message(engine, qid)
    assert out is not None
    return out
