"""Read what is on a topic, as a user checking the system would."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from medroute.config import KafkaSettings
from medroute.kafka.client import reader_of


async def read_topic(
    settings: KafkaSettings,
    topic: str,
    until: Callable[[list[dict[str, Any]]], bool] = lambda records: True,
    timeout: float = 60.0,
) -> list[dict[str, Any]]:
    """All JSON records on ``topic`` from the beginning, re-read until ``until(records)`` or timeout.

    Each item carries ``_key``, ``_partition`` and ``_offset`` beside the record's own fields.
    """
    reader = await reader_of(settings, topic)
    try:
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            batches = await reader.getmany(timeout_ms=300)
            for batch in batches.values():
                for record in batch:
                    value = json.loads(record.value)
                    value.update(
                        _key=record.key.decode() if record.key else None,
                        _partition=record.partition,
                        _offset=record.offset,
                    )
                    records.append(value)
            if not batches and (until(records) or time.monotonic() > deadline):
                return records
    finally:
        await reader.stop()


def read_topic_sync(settings: KafkaSettings, topic: str, **kwargs: Any) -> list[dict[str, Any]]:
    return asyncio.run(read_topic(settings, topic, **kwargs))


def dead_letter_since(settings: KafkaSettings, topic: str, since: str, reason: str) -> dict[str, Any] | None:
    """The first dead letter on ``topic`` for ``reason`` received at or after ``since`` (waits up to 30 s)."""

    def found(records: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next((r for r in records if r["received_at"] >= since and r["reason"] == reason), None)

    return found(read_topic_sync(settings, topic, until=lambda rs: found(rs) is not None, timeout=30))
