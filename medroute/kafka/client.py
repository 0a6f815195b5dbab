"""aiokafka clients configured from :class:`KafkaSettings` (bootstrap, TLS, SASL).

The producer is always idempotent with ``acks=all``: a send that returns has been written to
every in-sync replica, which is what "stored" means before a listener acknowledges anything.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from medroute.config import KafkaSettings


def _ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    if "SSL" not in settings.security_protocol:
        return None
    return create_ssl_context(
        cafile=settings.ssl_cafile, certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile
    )


def connection_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client takes: where the cluster is and how to log in."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    context = _ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.sasl_mechanism:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password
    return kwargs


def durable_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent, ``acks=all`` producer (not yet started)."""
    options: dict[str, Any] = {
        **connection_kwargs(settings),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 0,
        "request_timeout_ms": 10_000,
        "max_request_size": 32 * 1024 * 1024,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def consumer(settings: KafkaSettings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer (not yet started); no group and no auto-commit unless overrides say so."""
    options: dict[str, Any] = {
        **connection_kwargs(settings),
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_bytes": 64 * 1024 * 1024,
        "max_partition_fetch_bytes": 32 * 1024 * 1024,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def topic_partitions(settings: KafkaSettings, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic``; raises ``LookupError`` when the topic does not exist."""
    admin = AIOKafkaAdminClient(**connection_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = described[0]["partitions"] if described else []
    if not partitions or described[0].get("error_code"):
        raise LookupError(f"topic {topic!r} does not exist")
    return [TopicPartition(topic, p["partition"]) for p in sorted(partitions, key=lambda p: p["partition"])]


async def reader_of(settings: KafkaSettings, topic: str, from_beginning: bool = True) -> AIOKafkaConsumer:
    """A started, group-less consumer assigned every partition of ``topic``, at its start or its end."""
    partitions = await topic_partitions(settings, topic)
    reader = consumer(settings)
    await reader.start()
    reader.assign(partitions)
    if from_beginning:
        await reader.seek_to_beginning(*partitions)
    else:
        await reader.seek_to_end(*partitions)
    return reader


async def records_to_end(settings: KafkaSettings, topic: str, since_ms: int | None = None) -> list[ConsumerRecord]:
    """Every record of ``topic`` from its beginning (or from the first written at or after ``since_ms``, Unix
    ms) up to the end it had when called, each partition's in offset order; group-less."""
    partitions = await topic_partitions(settings, topic)
    reader = consumer(settings)
    await reader.start()
    try:
        reader.assign(partitions)
        ends = await reader.end_offsets(partitions)
        if since_ms is None:
            await reader.seek_to_beginning(*partitions)
        else:
            found = await reader.offsets_for_times({tp: since_ms for tp in partitions})
            for tp in partitions:
                reader.seek(tp, found[tp].offset if found.get(tp) else ends[tp])
        records: list[ConsumerRecord] = []
        while any([await reader.position(tp) < end for tp, end in ends.items()]):
            for tp, batch in (await reader.getmany(timeout_ms=1000)).items():
                records += [record for record in batch if record.offset < ends[tp]]
        return records
    finally:
        await reader.stop()
