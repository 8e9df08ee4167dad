"""The receiving addresses, cached in memory for the RCPT decision.

The SMTP shell must not wait on the database for every RCPT, yet an address added by the CLI
(another process) must be accepted at once. So: the cache follows the database's generation
counter (checked in the background), and a miss reloads synchronously, at most a few times a
second: a flood of unknown recipients costs one primary-key read of the generation each, not a
reload of every address each. (Skipping the check within that interval answered 550 for an
address added a moment before, until the next background check.)

The rules also carry the key of VERP bounce addresses (`mailcase.outbound.bounces`), read with
the addresses, so that a signed bounce address is accepted without a query per RCPT.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.engine import Engine

from mailcase.config import AutomationSettings
from mailcase.policy import AddressRule
from mailcase.policy.recipients import AddressRules
from mailcase.smtp.replies import Reply
from mailcase.storage import addresses

__all__ = ["AddressBook"]

log = logging.getLogger(__name__)

_MISS_RELOAD_INTERVAL = 0.2


class AddressBook:
    """Snapshot of receiving addresses: `rules` by lowercased address, `local_domains`."""

    def __init__(self, engine: Engine, automation: AutomationSettings | None = None) -> None:
        self._engine = engine
        self._automation = automation
        #: Reply for routing addresses while the daily case limit is reached, else None.
        self.routing_refusal: Reply | None = None
        self.rules: AddressRules = AddressRules()
        self.local_domains: frozenset[str] = frozenset()
        self._generation = -1
        self._loaded_at = 0.0

    def reload(self) -> None:
        """Read every address (small table) and the generation it belongs to."""
        gen = addresses.generation(self._engine)
        rows = addresses.list_addresses(self._engine)
        routing = _routing_addresses(self._engine)
        rules = {
            r.address.lower(): AddressRule(
                r.address.lower(), r.require_tls, r.enabled, r.address.lower() in routing
            )
            for r in rows
        }
        self._refresh_limit()
        self.rules = AddressRules(rules, _verp_key(self._engine))
        self.local_domains = frozenset(rule.domain for rule in rules.values())
        self._generation = gen
        self._loaded_at = time.monotonic()

    def reload_on_miss(self) -> bool:
        """Called when a recipient is unknown: reload unless nothing changed since the last
        load (always checked when that load was very recent, to spare a flood of misses)."""
        try:
            if (
                time.monotonic() - self._loaded_at < _MISS_RELOAD_INTERVAL
                and addresses.generation(self._engine) == self._generation
            ):
                return False
            self.reload()
        except Exception as e:  # noqa: BLE001 - keep the old snapshot; RCPT gets the old answer
            log.warning("address reload failed: %s", e)
            return False
        return True

    def _refresh_limit(self) -> None:
        """Today's case count against the daily limit (one primary-key read)."""
        cfg = self._automation
        if cfg is None or not cfg.daily_case_limit:
            self.routing_refusal = None
            return
        from mailcase.features.cases.limits import cases_today, rcpt_reply

        self.routing_refusal = rcpt_reply(cfg, cases_today(self._engine))

    async def follow(self, interval: float = 1.0) -> None:
        """Background task: reload whenever the database generation changes, and follow the
        daily case count when a limit is set."""
        while True:
            await asyncio.sleep(interval)
            try:
                gen = await asyncio.to_thread(addresses.generation, self._engine)
                if gen != self._generation:
                    await asyncio.to_thread(self.reload)
                elif self._automation is not None and self._automation.daily_case_limit:
                    await asyncio.to_thread(self._refresh_limit)
            except Exception as e:  # noqa: BLE001 - retry on the next tick
                log.warning("address refresh failed: %s", e)


def _routing_addresses(engine: Engine) -> frozenset[str]:
    """Enabled Email-to-Case routing addresses (imported late: a feature table)."""
    from sqlalchemy import select

    from mailcase.features.cases.models import routing_addresses

    with engine.connect() as conn:
        rows = conn.execute(
            select(routing_addresses.c.address).where(routing_addresses.c.enabled)
        ).scalars()
        return frozenset(a.lower() for a in rows)


def _verp_key(engine: Engine) -> bytes | None:
    """The VERP key if bounce handling has made one (imported late: outbound is optional)."""
    from mailcase.outbound.bounces import load_verp_key

    try:
        return load_verp_key(engine)
    except Exception as e:  # noqa: BLE001 - no bounce addresses rather than no addresses
        log.warning("VERP key not readable, bounce addresses refused: %s", e)
        return None
