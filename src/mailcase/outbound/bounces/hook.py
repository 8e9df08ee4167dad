"""The `EnqueueHook` of bounce handling: it marks suppressed recipients and adds the
compliance BCC addresses.

The composition root (`mailcase.platform.build_outbound`) hands it to every process that
enqueues (nothing is registered by importing this module).
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.engine import Connection

from mailcase.config import Settings
from mailcase.outbound.bounces.suppression import suppressed_among
from mailcase.outbound.queue import enqueue as queue_enqueue

__all__ = [
    "compliance_recipients",
    "enqueue_hook",
]


def compliance_recipients(settings: Settings) -> list[str]:
    """Addresses that silently get a copy of all outbound mail."""
    return [a.strip() for a in settings.dkim.compliance_bcc if a.strip()]


def enqueue_hook(settings: Settings) -> queue_enqueue.EnqueueHook:
    """The hook that adds the compliance BCC recipients of `settings` and marks suppressed ones
    (see module docstring).

    The compliance addresses themselves are never suppressed: the archive must not stop
    silently because it once refused a message."""

    def hook(conn: Connection, env: queue_enqueue.Envelope) -> queue_enqueue.Envelope:
        rcpts = list(env.rcpt_to)
        archive: set[str] = set()
        have = {r.lower() for r in rcpts}
        for extra in compliance_recipients(settings):
            archive.add(extra.lower())
            if extra.lower() not in have:
                rcpts.append(extra)
                have.add(extra.lower())
        gone = suppressed_among(conn, rcpts) - archive
        return replace(env, rcpt_to=tuple(rcpts), suppressed=frozenset(env.suppressed | gone))

    return hook
