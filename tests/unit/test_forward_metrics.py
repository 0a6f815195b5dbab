"""The forwarders' Prometheus metrics, read from each forwarder's counts at scrape time."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from pipeline.forward.forwarder import ForwardStats
from pipeline.forward.metrics import ForwardCollector


def forwarder(name: str, kind: str, breaker: str, **counts: float) -> SimpleNamespace:
    return SimpleNamespace(
        name=name, destination=SimpleNamespace(type=kind), breaker=SimpleNamespace(state=breaker),
        stats=ForwardStats(**counts),
    )  # fmt: skip


def test_each_destinations_counts_as_scraped() -> None:
    running = [
        forwarder("pacs", "dicom", "open", delivered=12, dead_lettered=1, retrying=3, last_delivered_at=1700000000.5),
        forwarder("ehr", "mllp", "closed", delivered=40, duplicates=2, in_flight=4),
    ]
    registry = CollectorRegistry()
    registry.register(ForwardCollector(lambda: running))
    lines = set(generate_latest(registry).decode().splitlines())
    assert {
        'medroute_forward_delivered_total{destination="pacs",type="dicom"} 12.0',
        'medroute_forward_delivered_total{destination="ehr",type="mllp"} 40.0',
        'medroute_forward_dead_lettered_total{destination="pacs",type="dicom"} 1.0',
        'medroute_forward_duplicates_total{destination="ehr",type="mllp"} 2.0',
        'medroute_forward_retrying{destination="pacs",type="dicom"} 3.0',
        'medroute_forward_in_flight{destination="ehr",type="mllp"} 4.0',
        'medroute_forward_breaker_open{destination="pacs",type="dicom"} 1.0',
        'medroute_forward_breaker_open{destination="ehr",type="mllp"} 0.0',
        'medroute_forward_last_delivery_timestamp_seconds{destination="pacs",type="dicom"} 1.7000000005e+09',
    } <= lines
    assert not any(line.startswith("medroute_forward_last_delivery") and "ehr" in line for line in lines)
    running[1].stats.delivered += 1  # read again at the next scrape
    assert 'medroute_forward_delivered_total{destination="ehr",type="mllp"} 41.0' in generate_latest(registry).decode()
