"""Prometheus metrics of one mailcase process (served at /metrics).

Counters live in a registry of our own rather than the global default, so that tests can
create several platforms in one process.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mailcase.smtp.reasons import RejectReason

# `_created` samples are per-process timestamps: summing them across acceptors is meaningless.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

_TLS_RATIO = "mailcase_messages_accepted_tls_ratio"

__all__ = ["Metrics"]


class _QueueDepths(Collector):
    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "mailcase_inbound_messages", "Stored inbound messages by state", labels=["state"]
        )
        try:
            depths = self._read()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB is busy
            depths = {}
        for state, n in sorted(depths.items()):
            g.add_metric([state], n)
        yield g


class _BacklogAge(Collector):
    def __init__(self, read: Callable[[], float | None]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            age = self._read()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB is busy
            return
        yield GaugeMetricFamily(
            "mailcase_pipeline_backlog_age_seconds",
            "Age of the oldest accepted message not processed yet (0: nothing waits); with "
            "mailcase_inbound_messages{state=\"received\"} the backlog, and "
            "rate(mailcase_pipeline_messages_total[1m]) the processing rate",
            value=age or 0.0,
        )


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class Metrics:
    """The counters the SMTP shell, spool and pipeline update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Counter(
            "mailcase_smtp_connections", "SMTP connections accepted", registry=r
        )
        self.connections_refused = Counter(
            "mailcase_smtp_connections_refused",
            "SMTP connections refused with 421",
            ["reason"],
            registry=r,
        )
        self.active_connections = Gauge(
            "mailcase_smtp_active_connections", "SMTP connections open now", registry=r
        )
        self.accepted = Counter(
            "mailcase_messages_accepted",
            "Messages accepted (250 after DATA/BDAT)",
            ["tls"],
            registry=r,
        )
        self.rejections = Counter(
            "mailcase_smtp_rejections", "Envelope or message refusals", ["reason"], registry=r
        )
        self.tls_handshakes = Counter(
            "mailcase_tls_handshakes", "STARTTLS handshakes", ["result"], registry=r
        )
        self.spool_commit_seconds = Histogram(
            "mailcase_spool_commit_seconds",
            "Duration of one group commit",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.spool_batch_size = Histogram(
            "mailcase_spool_batch_size",
            "Messages and log entries per group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.processed = Counter(
            "mailcase_pipeline_messages",
            "Messages processed by the pipeline",
            ["result"],
            registry=r,
        )
        self.tls_share = Gauge(
            "mailcase_messages_accepted_tls_ratio",
            "Share of accepted messages that arrived over TLS",
            registry=r,
        )
        self.tls_share.set_function(self._tls_ratio)

    def _tls_ratio(self) -> float:
        tls = self.accepted.labels(tls="yes")._value.get()
        plain = self.accepted.labels(tls="no")._value.get()
        total = tls + plain
        return tls / total if total else 0.0

    def count_rejection(self, code: RejectReason) -> None:
        """Count a refusal under its code. Labels come from the closed `RejectReason` set only:
        `RejectReason(code)` raises for anything else, such as text a client chose."""
        self.rejections.labels(reason=RejectReason(code).value).inc()

    def on_commit(self, batch_size: int, seconds: float) -> None:
        self.spool_batch_size.observe(batch_size)
        self.spool_commit_seconds.observe(seconds)

    def watch_queue_depths(self, read: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_QueueDepths(read))

    def watch_backlog_age(self, read: Callable[[], float | None]) -> None:
        """`read`: seconds the oldest unprocessed message has waited, None when none waits."""
        self.registry.register(_BacklogAge(read))

    def exposition(self, others: Iterable[list[Metric]] = ()) -> bytes:
        """Prometheus text for this process plus the snapshots of the other acceptors.

        Samples with the same name and labels are added up (every metric here is a counter,
        a histogram or a gauge that adds up, such as open connections); the TLS share is
        computed again from the summed counters.
        """
        snapshots = list(others)
        if not snapshots:
            return generate_latest(self.registry)
        merged: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for fam in itertools.chain(self.registry.collect(), *snapshots):
            if fam.name == _TLS_RATIO:
                continue
            if fam.name not in merged:
                merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            acc = values[fam.name]
            for sample in fam.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                acc[key] = acc.get(key, 0.0) + sample.value
        for name, fam in merged.items():
            for (sample_name, labels), value in values[name].items():
                fam.add_sample(sample_name, dict(labels), value)
        accepted = values.get("mailcase_messages_accepted", {})
        tls = accepted.get(("mailcase_messages_accepted_total", (("tls", "yes"),)), 0.0)
        plain = accepted.get(("mailcase_messages_accepted_total", (("tls", "no"),)), 0.0)
        ratio = GaugeMetricFamily(_TLS_RATIO, "Share of accepted messages that arrived over TLS")
        ratio.add_metric([], tls / (tls + plain) if tls + plain else 0.0)
        merged[_TLS_RATIO] = ratio
        registry = CollectorRegistry()
        registry.register(_Fixed(list(merged.values())))
        return generate_latest(registry)
