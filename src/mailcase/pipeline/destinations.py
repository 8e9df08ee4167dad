"""Which destinations the pipeline delivers accepted messages to, built from the settings.

`serve` and the tests call `build_destinations`; features add theirs here.

- `AddressInbox` records the delivery of every message to each of its addresses (plain
  receiving addresses need nothing more);
- `CaseDestination` turns messages to routing addresses into cases (Email-to-Case).
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from mailcase.config import Settings
from mailcase.pipeline.worker import AddressInbox, Destination

__all__ = ["build_destinations"]


def build_destinations(settings: Settings, engine: Engine) -> list[Destination]:
    """The destinations for this instance, in the order they run for each message."""
    from mailcase.features.cases.destination import CaseDestination
    from mailcase.outbound.bounces import BounceDestination  # DSNs to our VERP addresses

    return [AddressInbox(), CaseDestination(settings), BounceDestination(settings)]
