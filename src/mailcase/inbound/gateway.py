"""What the sessions of one listener share (the Gateway).

Apart from `listener` so that `session` can name it without an import cycle: the gateway knows
its sessions only as things that can be shut down (`Session`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mailcase.config import Settings
from mailcase.inbound.addressbook import AddressBook
from mailcase.inbound.limits import ConnectionTracker, SharedCounts
from mailcase.metrics import Metrics
from mailcase.smtp.server import ProtocolSettings
from mailcase.storage.spool import Spool
from mailcase.tls import ServerTLS

__all__ = ["Gateway", "Session", "protocol_settings_from"]


class Session(Protocol):
    """A live SMTP session, as the gateway sees it when stopping."""

    def shutdown(self) -> None: ...


def protocol_settings_from(settings: Settings) -> ProtocolSettings:
    """The protocol limits of the state machine, taken from the config."""
    i = settings.inbound
    return ProtocolSettings(
        hostname=settings.server.hostname,
        max_message_size=i.max_message_size,
        max_recipients=i.max_recipients,
        max_command_line=i.max_command_line,
        max_text_line=i.max_text_line,
        max_errors=i.max_errors,
        soft_error_limit=i.soft_error_limit,
        hard_error_limit=i.hard_error_limit,
        junk_command_limit=i.junk_command_limit,
        error_delay=i.error_sleep_time,
        bare_newline=i.bare_newline,
        tls_available=True,
        tls_required=i.tls == "required",
        smtputf8=i.smtputf8,
    )


@dataclass
class Gateway:
    """Everything the sessions of one listener share."""

    settings: Settings
    spool: Spool
    tls: ServerTLS
    addressbook: AddressBook
    metrics: Metrics
    on_stored: Callable[[], None] = lambda: None
    shared_counts: SharedCounts | None = None
    counts_row: int = 0
    protocol_settings: ProtocolSettings = field(init=False)
    tracker: ConnectionTracker = field(init=False)
    sessions: set[Session] = field(default_factory=set)
    tasks: set[asyncio.Future[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.protocol_settings = protocol_settings_from(self.settings)
        i = self.settings.inbound
        # With several acceptor processes the counts are shared, so the limits hold for all.
        self.tracker = ConnectionTracker(
            i.max_connections, i.max_connections_per_ip, self.shared_counts, self.counts_row
        )

    def notify_stored(self) -> None:
        self.on_stored()

    async def drain(self, grace: float) -> None:
        """Stopping: idle sessions get 421; those storing a message get `grace` s to finish."""
        for session in list(self.sessions):
            session.shutdown()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace)
