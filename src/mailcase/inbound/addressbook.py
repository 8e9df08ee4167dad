"""The receiving addresses, cached in memory for the RCPT decision.

The SMTP shell must not wait on the database for every RCPT, yet an address added by the CLI
(another process) must be accepted at once. So: the cache follows the database's generation
counter (checked in the background), and a miss reloads synchronously, at most a few times a
second: a flood of unknown recipients costs one primary-key read of the generation each, not a
reload of every address each. (Skipping the check within that interval answered 550 for an
address added a moment before, until the next background check.)

The rules also carry the key of VERP bounce addresses, read with the addresses, so that a
signed bounce address is accepted without a query per RCPT. What features add (routing
addresses, the daily case limit, the VERP key) comes through a `RecipientPolicy` that the
composition root passes in (`mailcase.platform.FeatureRecipients`): the SMTP side never
imports feature tables.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from sqlalchemy.engine import Engine

from mailcase.config import AutomationSettings
from mailcase.policy import Accept, AddressRule, Reject, decide_recipient
from mailcase.policy.recipients import AddressRules
from mailcase.smtp.replies import Reply
from mailcase.storage import addresses

__all__ = ["AddressBook", "RecipientPolicy"]

log = logging.getLogger(__name__)

_MISS_RELOAD_INTERVAL = 0.2


class RecipientPolicy(Protocol):
    """What the features tell the address book (each read runs in a worker thread)."""

    def routing_addresses(self, engine: Engine) -> frozenset[str]:
        """Enabled routing addresses, lowercased (they count toward the daily case limit)."""
        ...

    def routing_refusal(self, engine: Engine, automation: AutomationSettings) -> Reply | None:
        """The RCPT reply for routing addresses while the daily case limit is reached."""
        ...

    def verp_key(self, engine: Engine) -> bytes | None:
        """The key of our VERP bounce addresses, None while there is none."""
        ...


class AddressBook:
    """Snapshot of receiving addresses: `rules` by lowercased address, `local_domains`."""

    def __init__(
        self,
        engine: Engine,
        automation: AutomationSettings | None = None,
        *,
        policy: RecipientPolicy | None = None,
    ) -> None:
        self._engine = engine
        self._automation = automation
        self._policy = policy
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
        routing = (
            self._policy.routing_addresses(self._engine) if self._policy else frozenset[str]()
        )
        rules = {
            r.address.lower(): AddressRule(
                r.address.lower(), r.require_tls, r.enabled, r.address.lower() in routing
            )
            for r in rows
        }
        self._refresh_limit()
        self.rules = AddressRules(rules, self._verp_key())
        self.local_domains = frozenset(rule.domain for rule in rules.values())
        self._generation = gen
        self._loaded_at = time.monotonic()

    def decide(self, recipient: str, *, tls_active: bool) -> Accept | Reject:
        """The RCPT decision the session makes: the policy on this snapshot, and once more on
        a fresh one when an address we do not know is refused (it may have just been added).
        A known address refused for a reason of its own (disabled, TLS required) reloads
        nothing."""
        verdict = decide_recipient(
            recipient, self.rules, self.local_domains, tls_active=tls_active,
            routing_refusal=self.routing_refusal,
        )
        if (
            not isinstance(verdict, Accept)
            and recipient.lower() not in self.rules
            and self.reload_on_miss()
        ):
            verdict = decide_recipient(
                recipient, self.rules, self.local_domains, tls_active=tls_active,
                routing_refusal=self.routing_refusal,
            )
        return verdict

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
        if cfg is None or not cfg.daily_case_limit or self._policy is None:
            self.routing_refusal = None
            return
        self.routing_refusal = self._policy.routing_refusal(self._engine, cfg)

    def _verp_key(self) -> bytes | None:
        if self._policy is None:
            return None
        try:
            return self._policy.verp_key(self._engine)
        except Exception as e:  # noqa: BLE001 - no bounce addresses rather than no addresses
            log.warning("VERP key not readable, bounce addresses refused: %s", e)
            return None

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
