"""The web edge: REST API and server-rendered pages on one port (``medroute web``), behind login.

It runs the worker's own feeds and models for ``/api/classify`` and reads Kafka for the live view,
the review queue and the audit log; see :mod:`web.app` for how the parts fit together.
"""
