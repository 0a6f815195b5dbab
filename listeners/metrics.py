"""Prometheus metrics shared by the listeners, labelled by listener (``mllp``, ``dicom``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECEIVED = Counter("medroute_listener_received", "Items (frames) received", ["listener"])
ACKNOWLEDGED = Counter(
    "medroute_listener_acknowledged", "Acknowledgements sent, by code (AA, AE, AR, CA, CE, CR)", ["listener", "code"]
)
NEGATIVE = Counter("medroute_listener_negative", "Items refused, by reason", ["listener", "reason"])
DEAD_LETTERED = Counter(
    "medroute_listener_dead_lettered", "Items written to a dead-letter topic", ["listener", "reason"]
)
DUPLICATES = Counter("medroute_listener_duplicates", "Resent items answered without storing again", ["listener"])
CHARSET_ASSUMED = Counter(
    "medroute_listener_charset_assumed",
    "Messages accepted with an empty MSH-18 and bytes read in an assumed character set",
    ["listener", "charset"],
)
DISCARDED_BYTES = Counter("medroute_listener_discarded_bytes", "Bytes discarded outside protocol framing", ["listener"])
CONNECTIONS = Gauge("medroute_listener_connections", "Open connections", ["listener"])
ACK_LATENCY = Histogram(
    "medroute_listener_ack_latency_seconds",
    "From a complete item received to its answer sent",
    ["listener"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
