"""Replay ranges: parsing ``--from``/``--to`` and resolving them against a topic's offsets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from aiokafka import TopicPartition

from tools.operations.replay.ranges import BEGINNING, END, AtOffsets, AtTime, RangeError, parse_bound, resolve

TOPIC = "hl7.inbound"


def test_edges_offsets_and_times_are_read() -> None:
    assert parse_bound("beginning") is BEGINNING
    assert parse_bound(" END ") is END
    assert parse_bound("0:100,1:250") == AtOffsets({0: 100, 1: 250})
    expected = round(datetime(2026, 3, 1, 8, 0, tzinfo=UTC).timestamp() * 1000)
    assert parse_bound("2026-03-01T08:00:00Z") == AtTime(expected)
    assert parse_bound("2026-03-01T09:00:00+01:00") == AtTime(expected)
    assert parse_bound("2026-03-01T08:00:00.250+00:00") == AtTime(expected + 250)


def test_a_naive_time_is_local_time() -> None:
    local = datetime(2026, 3, 1, 8, 0).astimezone()
    assert parse_bound("2026-03-01T08:00") == AtTime(round(local.timestamp() * 1000))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("yesterday", "neither an ISO-8601 time"),
        ("0:abc", "not PARTITION:OFFSET"),
        ("0:1,0:2", "named twice"),
        ("2026-13-01", "neither an ISO-8601 time"),
    ],
)
def test_bad_bounds_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(RangeError, match=says):
        parse_bound(text)


@dataclass
class Hit:
    offset: int


class FakeTopic:
    """Offsets of a topic whose partition p holds offsets [first[p], last[p]), timestamps 1000 * offset."""

    def __init__(self, first: dict[int, int], last: dict[int, int]) -> None:
        self.first, self.last = first, last

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.first[tp.partition] for tp in tps}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.last[tp.partition] for tp in tps}

    async def offsets_for_times(self, times: dict[TopicPartition, int]) -> dict[TopicPartition, Hit | None]:
        found: dict[TopicPartition, Hit | None] = {}
        for tp, ms in times.items():
            offset = max(-(-ms // 1000), self.first[tp.partition])
            found[tp] = Hit(offset) if offset < self.last[tp.partition] else None
        return found


TOPIC_STATE = FakeTopic(first={0: 0, 1: 10, 2: 0}, last={0: 100, 1: 50, 2: 0})


async def test_default_range_is_the_whole_topic_as_it_is_now() -> None:
    assert await resolve(TOPIC_STATE, TOPIC, [0, 1, 2], BEGINNING, END) == {0: (0, 100), 1: (10, 50), 2: (0, 0)}


async def test_times_give_per_partition_offsets_and_an_exclusive_end() -> None:
    spans = await resolve(TOPIC_STATE, TOPIC, [0, 1, 2], AtTime(20_000), AtTime(40_500))
    assert spans == {0: (20, 41), 1: (20, 41), 2: (0, 0)}
    # after the last record: the end; before the first kept record: the log start
    assert await resolve(TOPIC_STATE, TOPIC, [0, 1], AtTime(5_000), AtTime(999_000)) == {0: (5, 100), 1: (10, 50)}


async def test_offsets_from_name_the_partitions_replayed() -> None:
    spans = await resolve(TOPIC_STATE, TOPIC, [0, 1, 2], AtOffsets({0: 30, 1: 5}), AtOffsets({0: 60}))
    assert spans == {0: (30, 60), 1: (10, 50)}  # 1: clamped to its log start; ends where the topic ends


async def test_an_end_before_the_start_is_an_empty_range() -> None:
    assert await resolve(TOPIC_STATE, TOPIC, [0], AtOffsets({0: 70}), AtOffsets({0: 20})) == {0: (70, 70)}
    assert await resolve(TOPIC_STATE, TOPIC, [0], AtOffsets({0: 500}), END) == {0: (100, 100)}


async def test_unknown_partitions_are_refused() -> None:
    with pytest.raises(RangeError, match="has no partition 7"):
        await resolve(TOPIC_STATE, TOPIC, [0, 1, 2], AtOffsets({7: 0}), END)
    with pytest.raises(RangeError, match="has no partition 3"):
        await resolve(TOPIC_STATE, TOPIC, [0, 1, 2], BEGINNING, AtOffsets({3: 0}))
