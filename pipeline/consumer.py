"""The worker's Kafka consumer: Faust's, except that a jump in the offsets of an inbound topic is read again.

Faust (0.15.3) drops records it has fetched when they arrive while their partition is not yet active or its
flow is stopped, for instance in the moments after a rebalance, but the fetch position has moved past them
already. When the next record of that partition comes, Faust takes the jump for a gap (which on compacted or
transactional topics is normal) and commits past it: the records in between were never decided. The chaos
soak found this (docs/RELIABILITY.md): offsets 537-543 and 851-853 of two partitions skipped after a rebalance.

``hl7.inbound`` and ``dicom.inbound`` are neither compacted nor written in transactions, so a jump there is
always such a loss. This consumer then stops the partition's batch at the jump and seeks back to where Faust
last was (or, for the first record after an assignment, to the group's committed offset: records dropped
before Faust had read any would otherwise leave a hole that it never commits past, a partition stalled for
good); the records come again with the next fetch (one already decided is recognised and skipped by the
agents). Retention can also leave a jump (the worker lagged behind the log's start): after a few seeks back
to the same place the jump is logged and left to Faust.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any

import structlog
from faust.transport.drivers.aiokafka import Consumer as FaustConsumer
from faust.transport.drivers.aiokafka import Transport
from faust.types import TP, Message

log = structlog.get_logger(__name__)

SEEKS_BACK_PER_JUMP = 3


class NoGapConsumer(FaustConsumer):
    no_gap_topics: frozenset[str] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seeks_back: Counter[tuple[TP, int]] = Counter()

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        stopped: set[TP] = set()
        async for tp, message in super().getmany(timeout):
            if tp in stopped:
                continue
            if tp.topic in self.no_gap_topics:
                # Faust's read offset is the last record it handled, or where a seek left it: the next record is
                # at most one past it, and seeking back to it reads at most that one record twice (the agents
                # skip what they decided). Without one (the first record after an assignment) the group's
                # committed offset comes next.
                last = self._read_offset.get(tp)
                if last is not None:
                    back_to, highest = last, last + 1
                else:
                    back_to = highest = await self._committed(tp)
                if back_to is not None and message.offset > highest:
                    if self._may_seek_back(tp, back_to):
                        stopped.add(tp)
                        log.warning("records_read_again", topic=tp.topic, partition=tp.partition, offset=back_to,
                                    jumped_to=message.offset)  # fmt: skip
                        await self.seek(tp, back_to)
                        continue
                    log.error("offsets_jumped", topic=tp.topic, partition=tp.partition, offset=back_to,
                              jumped_to=message.offset)  # fmt: skip
            yield tp, message

    async def _committed(self, tp: TP) -> int | None:
        thread = self._thread
        return await thread.call_thread(thread._ensure_consumer().committed, tp)

    def _may_seek_back(self, tp: TP, offset: int) -> bool:
        self._seeks_back[(tp, offset)] += 1
        return self._seeks_back[(tp, offset)] <= SEEKS_BACK_PER_JUMP


def read_every_record_of(transport: Transport, topics: Iterable[str]) -> None:
    """Make the consumer that ``transport`` will create a :class:`NoGapConsumer` for ``topics``."""
    consumer_class = type("WorkerConsumer", (NoGapConsumer,), {"no_gap_topics": frozenset(topics)})
    transport.Consumer = consumer_class
