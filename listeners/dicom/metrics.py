"""DICOM-specific Prometheus metrics, beside the listener metrics every listener shares
(:mod:`listeners.metrics`, labelled ``dicom``: received, refused by reason, dead-lettered, answers by
status, and the store latency from a complete dataset received to its status sent)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RECEIVED_BYTES = Counter("medroute_dicom_received_bytes", "Bytes of datasets received over C-STORE")
BLOB_LATENCY = Histogram(
    "medroute_dicom_blob_write_seconds", "Encrypting and fsyncing one dataset into the blob store",
    buckets=LATENCY_BUCKETS,
)
KAFKA_LATENCY = Histogram(
    "medroute_dicom_kafka_write_seconds", "Writing one dicom.inbound record until Kafka acknowledged it",
    buckets=LATENCY_BUCKETS,
)
ASSOCIATIONS_REFUSED = Counter(
    "medroute_dicom_associations_refused", "Connections or associations refused, by reason", ["reason"]
)
