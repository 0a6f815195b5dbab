"""Prometheus metrics of the classification worker (served when MEDROUTE_WORKER_METRICS_PORT is set)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

CLASSIFIED = Counter("medroute_worker_classified", "Messages classified, by model and label", ["model", "label"])
DECISIONS = Counter("medroute_worker_decisions", "Routing decisions published, by rule", ["rule"])
DEAD_LETTERED = Counter("medroute_worker_dead_lettered", "Records dead-lettered by the worker, by reason", ["reason"])
DUPLICATES = Counter("medroute_worker_duplicates", "Redelivered records recognised as already decided")
EXTRACTION_FAILURES = Counter(
    "medroute_worker_extraction_failures", "Messages with an embedded document that could not be read"
)
CLASSIFY_LATENCY = Histogram(
    "medroute_worker_classify_latency_seconds", "One predict call over a micro-batch", buckets=_LATENCY_BUCKETS
)
END_TO_END_LATENCY = Histogram(
    "medroute_worker_end_to_end_latency_seconds",
    "From the listener's receipt (received_at) to the decision published",
    buckets=_LATENCY_BUCKETS,
)
