"""The web server's Prometheus metrics (served on its own ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("medroute_web_classify_total", "classify requests answered", ["kind", "status"])
LATENCY = Histogram(
    "medroute_web_classify_seconds",
    "classify request latency",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LOGIN_FAILURES = Counter("medroute_web_login_failures_total", "failed logins (wrong name or password)")
LOGINS_REFUSED = Counter("medroute_web_logins_rate_limited_total", "login attempts refused by the rate limit")
AUDIT_DROPPED = Counter("medroute_web_audit_dropped_total", "audit events dropped: the queue to Kafka was full")
FEEDBACK = Counter("medroute_web_feedback_total", "review answers stored on the feedback topic", ["accepted"])
