"""The replay loop: read a range of a topic, decide each record as the worker would, write the decisions.

Per batch, in this order:

1. take up to ``batch_size`` records of the range (``--max-rate`` paces how fast);
2. decide them with the worker's own feed (:mod:`pipeline.hl7_feed` or :mod:`pipeline.dicom_feed`, in a
   thread so the consumer keeps fetching), with the replay's model and rules;
3. in one Kafka transaction: each decision (marked with the replay id, the model and the record's
   position) to the output topic, and the checkpoint that says how far the range is done.

A crash anywhere leaves either the whole batch and its checkpoint committed, or neither; the next
run with the same replay id first fences the old producer (same transactional id), which aborts its
open transaction, then resumes from the last committed checkpoint. Readers of the output topic must
use ``read_committed`` to see only committed decisions (``medroute replay diff`` does).

The source is read with manual partition assignment and no consumer group, so a replay never
joins, rebalances or commits offsets for the live worker's group.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from medroute.config import KafkaSettings
from medroute.kafka.client import consumer
from medroute.logs import hash_id
from medroute.records import DicomRecord, Hl7Record, RoutingDecision, utc_now
from pipeline.feed import Feed
from pipeline.outcomes import Decided, Rejected
from tools.operations.replay.checkpoint import Checkpoint

log = structlog.get_logger(__name__)

Progress = Callable[[int], object]  # called with the number of range offsets just finished


class Pacer:
    """Keeps a long-run average at or under ``rate`` items/s (None: no limit)."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.began = clock()
        self.count = 0

    def delay(self, items: int) -> float:
        """Seconds to wait before handling ``items`` more."""
        if not self.rate:
            return 0.0
        due = self.began + (self.count + items) / self.rate
        self.count += items
        return max(0.0, due - self.clock())


def replayed(decision: RoutingDecision, checkpoint: Checkpoint, record: ConsumerRecord) -> RoutingDecision:
    """A decision marked as the replay's: replay id, and where its record sits in the source topic."""
    return dataclasses.replace(
        decision,
        replay_id=checkpoint.replay_id,
        source_offset=f"{record.topic}:{record.partition}:{record.offset}",
    )


class ReplayRunner:
    """Runs one replay to the end of its range from its current checkpoint."""

    def __init__(
        self,
        settings: KafkaSettings,
        feed: Feed,
        producer: AIOKafkaProducer,
        checkpoints_topic: str,
        batch_size: int = 64,
        max_rate: float | None = None,
    ) -> None:
        self.settings = settings
        self.feed = feed
        self.producer = producer
        self.checkpoints_topic = checkpoints_topic
        self.batch_size = max(1, min(batch_size, int(max_rate) or 1)) if max_rate else batch_size
        self.pacer = Pacer(max_rate)

    async def commit(self, checkpoint: Checkpoint, decisions: list[RoutingDecision]) -> None:
        """Decisions and the checkpoint in one transaction."""
        checkpoint.updated_at = utc_now()
        async with self.producer.transaction():
            for decision in decisions:
                await self.producer.send(checkpoint.output_topic, decision.to_json(), key=decision.message_id.encode())
            await self.producer.send(self.checkpoints_topic, checkpoint.to_json(), key=checkpoint.replay_id.encode())

    async def run(self, checkpoint: Checkpoint, progress: Progress = lambda n: None) -> Checkpoint:
        remaining = checkpoint.remaining
        if remaining:
            reader = consumer(self.settings, max_poll_records=self.batch_size)
            await reader.start()
            try:
                await self._replay(reader, checkpoint, remaining, progress)
            finally:
                await reader.stop()
        checkpoint.finished_at = utc_now()
        await self.commit(checkpoint, [])
        return checkpoint

    async def _replay(
        self,
        reader: AIOKafkaConsumer,
        checkpoint: Checkpoint,
        remaining: dict[int, tuple[int, int]],
        progress: Progress,
    ) -> None:
        tps = {p: TopicPartition(checkpoint.source_topic, p) for p in remaining}
        reader.assign(list(tps.values()))
        for p, (first, _) in remaining.items():
            reader.seek(tps[p], first)
        active = set(remaining)
        while active:
            batches = await reader.getmany(*(tps[p] for p in active), timeout_ms=1000, max_records=self.batch_size)
            records = [
                record
                for tp, batch in batches.items()
                for record in batch
                if checkpoint.next[tp.partition] <= record.offset < checkpoint.end[tp.partition]
            ]
            await asyncio.sleep(self.pacer.delay(len(records)))
            decisions = await self._decide(records, checkpoint)
            before = checkpoint.done
            for p in list(active):
                # The position, not the last record: it also moves past offsets the log no longer holds.
                checkpoint.next[p] = min(await reader.position(tps[p]), checkpoint.end[p])
                if checkpoint.next[p] >= checkpoint.end[p]:
                    active.discard(p)
                    reader.pause(tps[p])
            if checkpoint.done == before:
                continue
            await self.commit(checkpoint, decisions)
            progress(checkpoint.done - before)

    async def _decide(self, records: list[ConsumerRecord], checkpoint: Checkpoint) -> list[RoutingDecision]:
        readable: list[tuple[ConsumerRecord, Hl7Record | DicomRecord]] = []
        reasons: Counter[str] = Counter()
        for record in records:
            item = self.feed.read(record.value)
            if isinstance(item, Rejected):
                reasons[item.dead_letter.reason] += 1
            else:
                readable.append((record, item))
        outcomes = await asyncio.to_thread(self.feed.process, [item for _, item in readable]) if readable else []
        decisions = []
        for (record, _), outcome in zip(readable, outcomes, strict=True):
            if isinstance(outcome, Decided):
                decisions.append(replayed(outcome.decision, checkpoint, record))
            else:
                reasons[outcome.dead_letter.reason] += 1
                log.info("replay_rejected", message=hash_id(outcome.message_id), reason=outcome.dead_letter.reason)
        checkpoint.decided += len(decisions)
        for reason, count in reasons.items():
            checkpoint.rejected[reason] = checkpoint.rejected.get(reason, 0) + count
        return decisions
