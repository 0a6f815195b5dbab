"""Forwarders: deliver each decided item to the destinations its decision names.

One consumer group per destination on ``routing.decisions`` (``medroute-forward-<name>``), so a
destination that is down holds back only itself. Per destination: a concurrency limit, one patient's or
one study's items in order (decisions are keyed by that), retries with exponential backoff and jitter, a
circuit breaker, a dead letter on ``forward.deadletter`` after the last attempt, an audit event per attempt,
and a delivered-ids ledger (``forward.delivered``) that turns a redelivered decision into a no-op.

Modules: :mod:`~pipeline.forward.destinations` (the YAML file), :mod:`~pipeline.forward.policy` (backoff,
breaker), :mod:`~pipeline.forward.items` (the item behind a decision), one module per destination type
(:mod:`~pipeline.forward.mllp`, :mod:`~pipeline.forward.dicom`, :mod:`~pipeline.forward.http`,
:mod:`~pipeline.forward.folder`, :mod:`~pipeline.forward.kafka_topic`), :mod:`~pipeline.forward.ledger`,
:mod:`~pipeline.forward.forwarder` (one destination's loop), :mod:`~pipeline.forward.service` (all of
them, reloaded on change) and :mod:`~pipeline.forward.status`.
"""
