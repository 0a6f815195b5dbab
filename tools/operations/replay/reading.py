"""Reading a topic (or part of it) to its end as it is now, seeing committed records only.

Replay writes in Kafka transactions, so its topics are read with ``read_committed``. Such a reader
cannot pass a transaction that is still open (another replay mid-batch, or one killed a moment ago
whose transaction the broker has not yet aborted). Reading stops only at the high watermark taken at
the start, so an open transaction makes it wait (up to ``timeout``) rather than stop early and miss
committed records behind it: a resume that saw an older checkpoint would write duplicates.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping

from aiokafka import ConsumerRecord, TopicPartition

from medroute.config import KafkaSettings
from medroute.kafka.client import consumer, topic_partitions


class ReadTimeoutError(TimeoutError):
    """A committed read could not reach the end of the topic in time (an open transaction held it)."""


async def read_committed(
    settings: KafkaSettings,
    topic: str,
    spans: Mapping[int, tuple[int, int]] | None = None,
    timeout: float = 90.0,
) -> AsyncIterator[ConsumerRecord]:
    """Every committed record of ``topic`` (or of ``spans``: partition -> (start, end)), in partition order."""
    reader = consumer(settings, isolation_level="read_committed")
    await reader.start()
    try:
        if spans is None:
            tps = await topic_partitions(settings, topic)
            reader.assign(tps)
            # High watermarks: what a read_uncommitted reader would call the end.
            ends = await _high_watermarks(settings, tps)
            await reader.seek_to_beginning(*tps)
        else:
            tps = [TopicPartition(topic, p) for p in sorted(spans) if spans[p][0] < spans[p][1]]
            reader.assign(tps)
            ends = {tp: spans[tp.partition][1] for tp in tps}
            for tp in tps:
                reader.seek(tp, spans[tp.partition][0])
        pending = {tp for tp in tps if await reader.position(tp) < ends[tp]}
        deadline = time.monotonic() + timeout
        while pending:
            batches = await reader.getmany(*pending, timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield record
            for tp in list(pending):
                if await reader.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    reader.pause(tp)
            if pending and time.monotonic() > deadline:
                names = ", ".join(f"{tp.topic}:{tp.partition}" for tp in sorted(pending))
                raise ReadTimeoutError(f"{names}: not read to the end within {timeout:.0f} s (an open transaction?)")
    finally:
        await reader.stop()


async def _high_watermarks(settings: KafkaSettings, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    probe = consumer(settings)  # read_uncommitted: its end offsets are the high watermarks
    await probe.start()
    try:
        return await probe.end_offsets(tps)
    finally:
        await probe.stop()
