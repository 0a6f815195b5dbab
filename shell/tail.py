"""``medroute tail``: a topic's records as JSON lines on stdout."""

from __future__ import annotations

import base64
import json
import sys
from typing import Any, TextIO

from aiokafka import ConsumerRecord

from medroute.config import KafkaSettings
from medroute.kafka.client import reader_of


def record_as_json(record: ConsumerRecord) -> dict[str, Any]:
    """One record as a JSON-able dict; a value that is not JSON is shown as base64."""
    try:
        value: Any = json.loads(record.value) if record.value is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        value = {"base64": base64.b64encode(record.value).decode("ascii")}
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": key,
        "value": value,
    }


async def tail(
    settings: KafkaSettings,
    topic: str,
    from_beginning: bool = False,
    max_records: int | None = None,
    idle_timeout: float | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print records until ``max_records`` are printed or no record came for ``idle_timeout`` s."""
    try:
        reader = await reader_of(settings, topic, from_beginning)
    except LookupError as exc:
        raise SystemExit(str(exc)) from None
    printed = 0
    try:
        while max_records is None or printed < max_records:
            batches = await reader.getmany(timeout_ms=int((idle_timeout or 3600) * 1000))
            if not batches:
                break
            for records in batches.values():
                for record in records:
                    out.write(json.dumps(record_as_json(record), ensure_ascii=False) + "\n")
                    printed += 1
                    if max_records is not None and printed >= max_records:
                        break
            out.flush()
    finally:
        await reader.stop()
    return printed
