"""Idempotent creation of medroute's topics with the configured partitions and replication."""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from medroute.config import (
    ALL_TOPICS,
    CONTROL,
    FORWARD_DELIVERED,
    FORWARD_STATUS,
    HL7_RECEIVED_IDS,
    REPLAY_CHECKPOINTS,
    KafkaSettings,
)
from medroute.kafka.client import connection_kwargs

# Records may carry a whole 16 MiB HL7 frame (base64 in JSON): allow them on every topic.
TOPIC_CONFIG = {"max.message.bytes": str(32 * 1024 * 1024)}
# Per-topic additions: only the latest checkpoint of each replay id matters, so compaction keeps it forever.
TOPIC_OVERRIDES: dict[str, dict[str, str]] = {
    REPLAY_CHECKPOINTS: {"cleanup.policy": "compact"},
    CONTROL: {"cleanup.policy": "compact"},
    FORWARD_STATUS: {"cleanup.policy": "compact"},
    # A ledger entry matters only until its decision's offset is committed (seconds): a week is ample.
    FORWARD_DELIVERED: {"cleanup.policy": "compact,delete", "retention.ms": str(7 * 24 * 3600 * 1000)},
    HL7_RECEIVED_IDS: {"retention.ms": str(24 * 3600 * 1000)},
}


async def ensure_topics(
    settings: KafkaSettings, names: tuple[str, ...] = ALL_TOPICS, partitions: int | None = None
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(**connection_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if missing:
            new_topics = [
                NewTopic(
                    name,
                    num_partitions=partitions or settings.partitions,
                    replication_factor=settings.replication,
                    topic_configs={**TOPIC_CONFIG, **TOPIC_OVERRIDES.get(name, {})},
                )
                for name in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # another process created them meanwhile
                await admin.create_topics(new_topics)
        return missing
    finally:
        await admin.close()
