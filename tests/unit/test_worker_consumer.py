"""The worker's consumer reads a jump in an inbound topic's offsets again instead of letting Faust commit past it."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import Consumer as FaustConsumer
from faust.types import TP

from pipeline.consumer import SEEKS_BACK_PER_JUMP, NoGapConsumer

INBOUND = TP("hl7.inbound", 0)
OTHER_INBOUND = TP("hl7.inbound", 1)
CHANGELOG = TP("medroute-worker-decided-changelog", 0)


class Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class Probe(NoGapConsumer):
    no_gap_topics = frozenset({"hl7.inbound"})

    def __init__(self, committed: dict[TP, int] | None = None) -> None:  # none of Faust's machinery
        self._read_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._seeks_back = Counter()
        self.seeks: list[tuple[TP, int]] = []
        self.committed = committed or {}

    async def _committed(self, tp: TP) -> int | None:
        return self.committed.get(tp)

    async def seek(self, partition: TP, offset: int) -> None:
        self.seeks.append((partition, offset))
        self._read_offset[partition] = offset


def drain(consumer: Probe, fetched: list[tuple[TP, int]], monkeypatch: pytest.MonkeyPatch) -> list[tuple[TP, int]]:
    """One getmany over ``fetched``, processed as Faust's drain loop does (read offset set after each)."""

    async def fetched_records(self: Any, timeout: float) -> Any:
        for tp, offset in fetched:
            yield tp, Record(offset)

    monkeypatch.setattr(FaustConsumer, "getmany", fetched_records)

    async def run() -> list[tuple[TP, int]]:
        processed = []
        async for tp, message in consumer.getmany(1.0):
            processed.append((tp, message.offset))
            consumer._read_offset[tp] = message.offset
        return processed

    return asyncio.run(run())


def test_contiguous_records_pass_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = Probe()
    consumer._read_offset[INBOUND] = 9  # where Faust last was (or sought to)
    fetched = [(INBOUND, 9), (INBOUND, 10), (INBOUND, 11), (OTHER_INBOUND, 0)]
    assert drain(consumer, fetched, monkeypatch) == fetched
    assert consumer.seeks == []


def test_a_jump_stops_the_partition_and_seeks_back_to_where_faust_was(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = Probe()
    consumer._read_offset[INBOUND] = 535  # sought to the committed offset; 535-543 were dropped
    fetched = [(INBOUND, 544), (OTHER_INBOUND, 7), (INBOUND, 545)]
    assert drain(consumer, fetched, monkeypatch) == [(OTHER_INBOUND, 7)]
    assert consumer.seeks == [(INBOUND, 535)]
    # the next fetch brings them from there, in order
    again = [(INBOUND, 535), (INBOUND, 536), (INBOUND, 537)]
    assert drain(consumer, again, monkeypatch) == again


def test_jumps_in_other_topics_are_left_to_faust(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = Probe()
    consumer._read_offset[CHANGELOG] = 3  # compacted: jumps are normal
    fetched = [(CHANGELOG, 10), (CHANGELOG, 20)]
    assert drain(consumer, fetched, monkeypatch) == fetched
    assert consumer.seeks == []


def test_a_jump_that_keeps_coming_back_is_let_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retention deleted the records: seeking back cannot bring them, so the jump is logged and passed on."""
    consumer = Probe()
    for _ in range(SEEKS_BACK_PER_JUMP):
        consumer._read_offset[INBOUND] = 100
        assert drain(consumer, [(INBOUND, 200)], monkeypatch) == []
    assert drain(consumer, [(INBOUND, 200)], monkeypatch) == [(INBOUND, 200)]
    assert consumer.seeks == [(INBOUND, 100)] * SEEKS_BACK_PER_JUMP


def test_records_dropped_before_faust_read_any_are_read_from_the_committed_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No read offset yet (just assigned): the first record must be the committed one, else the hole before it
    would never be committed past (the partition stalls)."""
    consumer = Probe(committed={INBOUND: 40, OTHER_INBOUND: 7})
    fetched = [(INBOUND, 45), (OTHER_INBOUND, 7), (OTHER_INBOUND, 8)]
    assert drain(consumer, fetched, monkeypatch) == [(OTHER_INBOUND, 7), (OTHER_INBOUND, 8)]
    assert consumer.seeks == [(INBOUND, 40)]
    again = [(INBOUND, 40), (INBOUND, 41)]
    assert drain(consumer, again, monkeypatch) == again


def test_a_partition_never_committed_is_left_to_faust(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = Probe()
    assert drain(consumer, [(INBOUND, 0), (INBOUND, 1)], monkeypatch) == [(INBOUND, 0), (INBOUND, 1)]
    assert consumer.seeks == []
