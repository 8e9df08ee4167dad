"""What the delivery engine asks of DKIM signing and bounce handling, as typed values.

The engine consumes the queue and must not know who signs or who answers a bounce: the
composition root (`mailcase.platform.build_outbound`) fills `DeliveryHooks` with the outbound
package's functions (DKIM, VERP, DSNs) and passes them in. A hook left as None is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlalchemy.engine import Engine

from mailcase.config import Settings

__all__ = ["DeliveryHooks", "FailureHandler", "ReturnPath", "Signer"]


class Signer(Protocol):
    """The content actually sent (DKIM-signed); may raise, then the message goes unsigned."""

    def __call__(
        self, engine: Engine, settings: Settings, mail_from: str, content: bytes, /
    ) -> bytes: ...


class ReturnPath(Protocol):
    """The envelope sender of an attempt (VERP); not called for the null sender."""

    def __call__(self, settings: Settings, queue_id: str, mail_from: str, /) -> str: ...


class FailureHandler(Protocol):
    """Called in the transaction that records permanent failures (a DSN is enqueued there);
    `recipients` are dicts (address, stage, code, reply)."""

    def __call__(
        self,
        conn: Connection,
        settings: Settings,
        message_row: Any,
        recipients: Sequence[Any],
        reply: Any,
        /,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class DeliveryHooks:
    """The engine's hooks; the default (all None) delivers mail exactly as queued."""

    sign: Signer | None = None
    return_path: ReturnPath | None = None
    on_permanent_failure: FailureHandler | None = None
