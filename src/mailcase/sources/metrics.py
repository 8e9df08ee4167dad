"""Metrics of the mailbox agent, registered on the process's registry (served at /metrics).

Labels are fixed sets (TLS yes/no, `imap.FAILURE_KINDS`, the source states), never a source's
name or anything a mail server said: those stay in `source list` and the email log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["SourceMetrics"]

STATES = ("new", "idle", "polling", "backoff", "paused")


class _States(Collector):
    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily("mailcase_sources", "Mailbox sources by state", labels=["state"])
        try:
            counts = self._read()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB is busy
            counts = {}
        for state in STATES:
            g.add_metric([state], counts.get(state, 0))
        yield g


class SourceMetrics:
    """Messages taken and skipped, failures by kind, sources by state."""

    def __init__(self, registry: CollectorRegistry,
                 states: Callable[[], dict[str, int]] | None = None) -> None:
        self.taken = Counter("mailcase_source_messages_taken",
                             "Messages taken from mailbox sources into the spool", ["tls"],
                             registry=registry)
        self.skipped = Counter("mailcase_source_messages_skipped",
                               "Messages not taken from mailbox sources (over the size limit, "
                               "refused by the spool): left on the server or moved aside",
                               registry=registry)
        self.failures = Counter("mailcase_source_failures",
                                "Mailbox source failures (each starts a back-off)", ["kind"],
                                registry=registry)
        if states is not None:
            registry.register(_States(states))
