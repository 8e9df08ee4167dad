"""Messages and a spool-and-process loop for the Email-to-Case storage tests."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from mailcase.config import Settings, load_settings
from mailcase.pipeline.worker import process_pending
from mailcase.platform import build_destinations
from mailcase.storage.spool import Spool
from tests.unit.storage.helpers import accepted_reply, make_message

_seq = itertools.count(1)


def eml(
    *,
    from_: str = "Ann Customer <ann@customer.test>",
    to: str = "support@ours.test",
    cc: str | None = None,
    subject: str = "Printer on fire",
    body: str = "It is burning.\r\n",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    extra: str = "",
    received: str = "from client.customer.test",
) -> bytes:
    mid = message_id or f"<m{next(_seq)}@customer.test>"
    lines = [f"Received: {received}", f"From: {from_}", f"To: {to}"]
    if cc:
        lines.append(f"Cc: {cc}")
    lines += [f"Subject: {subject}", f"Message-ID: {mid}", "Date: Thu, 26 Nov 2026 10:00:00 +0000"]
    if in_reply_to:
        lines.append(f"In-Reply-To: {in_reply_to}")
    if references:
        lines.append(f"References: {references}")
    lines.append("MIME-Version: 1.0")
    if extra:
        lines.append(extra.rstrip("\r\n"))
    if "Content-Type" not in extra:
        lines.append("Content-Type: text/plain; charset=utf-8")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def settings(tmp: Path, **cases: Any) -> Settings:
    cfg: dict[str, Any] = {"authenticate": False}
    cfg.update(cases)
    return load_settings(environ={}, overrides={"data_dir": str(tmp), "cases": cfg})


async def deliver(
    engine: Engine,
    s: Settings,
    content: bytes,
    *,
    rcpt_to: tuple[str, ...] = ("support@ours.test",),
    mail_from: str = "ann@customer.test",
    **extra: object,
) -> int:
    """Spool one message and run the pipeline; returns how many messages it handled."""
    msg = make_message(
        rcpt_to=rcpt_to, content=bytearray(content), mail_from=mail_from, **extra
    )
    spool = Spool(engine)
    spool.start()
    try:
        await spool.store(msg, *accepted_reply(msg))
    finally:
        spool.close()
    return process_pending(engine, build_destinations(s, engine))
