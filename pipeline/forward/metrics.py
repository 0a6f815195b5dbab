"""The forwarders' Prometheus metrics (served when ``MEDROUTE_FORWARD_METRICS_PORT`` is set).

Read from each running forwarder's own counts when scraped, so the delivery path does no extra work and the
figures are the ones ``medroute forward status`` shows. Counts start again when a destination's forwarder
restarts (Prometheus reads that as a counter reset). What a destination still has to pass is its consumer
group's lag on ``routing.decisions`` (group ``medroute-forward-<destination>``), for a Kafka exporter to report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.forward.forwarder import Forwarder
from pipeline.forward.policy import CLOSED

LABELS = ["destination", "type"]
# ForwardStats field -> (metric, help)
COUNTERS = {
    "delivered": ("medroute_forward_delivered", "Items the receiver acknowledged"),
    "dead_lettered": ("medroute_forward_dead_lettered", "Items given up on (refused, or out of attempts)"),
    "duplicates": ("medroute_forward_duplicates", "Decisions skipped: the ledger held their id"),
}
GAUGES = {
    "retrying": ("medroute_forward_retrying", "Items waiting to be tried again"),
    "in_flight": ("medroute_forward_in_flight", "Deliveries under way"),
}


class ForwardCollector(Collector):
    def __init__(self, forwarders: Callable[[], list[Forwarder]]) -> None:
        self._forwarders = forwarders

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            **{field: CounterMetricFamily(name, text, labels=LABELS) for field, (name, text) in COUNTERS.items()},
            **{field: GaugeMetricFamily(name, text, labels=LABELS) for field, (name, text) in GAUGES.items()},
        }
        breaker_open = GaugeMetricFamily(
            "medroute_forward_breaker_open", "1 while the receiver's breaker is open or half open", labels=LABELS
        )
        last = GaugeMetricFamily(
            "medroute_forward_last_delivery_timestamp_seconds",
            "When the receiver last acknowledged an item (Unix time)",
            labels=LABELS,
        )
        for forwarder in self._forwarders():
            labels = [forwarder.name, forwarder.destination.type]
            for field, family in families.items():
                family.add_metric(labels, getattr(forwarder.stats, field))
            breaker_open.add_metric(labels, 0 if forwarder.breaker.state == CLOSED else 1)
            if forwarder.stats.last_delivered_at is not None:
                last.add_metric(labels, forwarder.stats.last_delivered_at)
        yield from (*families.values(), breaker_open, last)
