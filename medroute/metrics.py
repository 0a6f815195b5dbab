"""The Prometheus endpoint every process serves its metrics on; the metrics themselves live with the
process that counts them (``listeners.metrics``, ``pipeline.metrics``)."""

from __future__ import annotations

from prometheus_client import start_http_server


def start_metrics_server(port: int, host: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` over HTTP (loopback unless a host is given)."""
    start_http_server(port, addr=host)
