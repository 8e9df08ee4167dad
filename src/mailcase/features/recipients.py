"""What the features tell the SMTP side's address book (its `RecipientPolicy`).

Email-to-Case routing addresses and its daily case limit, and the key of the VERP bounce
addresses. The composition root (`mailcase.platform`) hands it to the address book and, pickled,
to the acceptor processes: so it lives in a light module (no web framework to import there).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine

from mailcase.config import AutomationSettings
from mailcase.features.cases.automation.limits import cases_today, rcpt_reply
from mailcase.features.cases.models import routing_addresses
from mailcase.outbound.bounces import verp
from mailcase.smtp.replies import Reply

__all__ = ["FeatureRecipients"]


@dataclass(frozen=True, slots=True)
class FeatureRecipients:
    """The `RecipientPolicy` of the features; without state, so that it pickles cheaply."""

    def routing_addresses(self, engine: Engine) -> frozenset[str]:
        with engine.connect() as conn:
            rows = conn.execute(
                select(routing_addresses.c.address).where(routing_addresses.c.enabled)
            ).scalars()
            return frozenset(a.lower() for a in rows)

    def routing_refusal(self, engine: Engine, automation: AutomationSettings) -> Reply | None:
        return rcpt_reply(automation, cases_today(engine))

    def verp_key(self, engine: Engine) -> bytes | None:
        return verp.load_verp_key(engine)
