"""Where a replay starts and ends in each partition.

``--from`` and ``--to`` each take one of:

* an ISO-8601 time (``2026-03-01T08:00``, ``2026-03-01T08:00:00+01:00``, ``2026-03-01``): the first
  record whose Kafka timestamp is at or after it, per partition; without a UTC offset it is the local
  time of this machine;
* offsets per partition, ``0:100,1:250``: with ``--from`` only the partitions named are replayed;
  with ``--to`` the partitions not named end where the topic ended at start;
* ``beginning`` (the default of ``--from``) or ``end`` (the default of ``--to``: the end offsets when
  the replay starts, so traffic arriving meanwhile is not chased).

The end is exclusive. Resolving needs only three questions a Kafka consumer answers
(``beginning_offsets``, ``end_offsets``, ``offsets_for_times``), so tests can pass a fake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aiokafka import TopicPartition


class RangeError(ValueError):
    """A bound that cannot be read or does not fit the topic; the message says which and why."""


@dataclass(frozen=True)
class Edge:
    """``beginning`` or ``end`` of the topic (as it is when the replay starts)."""

    name: str


@dataclass(frozen=True)
class AtTime:
    epoch_ms: int


@dataclass(frozen=True)
class AtOffsets:
    offsets: Mapping[int, int]  # partition -> offset


Bound = Edge | AtTime | AtOffsets
BEGINNING = Edge("beginning")
END = Edge("end")
_EDGES = {"beginning": BEGINNING, "earliest": BEGINNING, "end": END, "latest": END}


def parse_bound(text: str) -> Bound:
    """One ``--from``/``--to`` value (see the module docstring)."""
    value = text.strip()
    if not value:
        raise RangeError("an empty range bound")
    if value.lower() in _EDGES:
        return _EDGES[value.lower()]
    if ":" in value and "-" not in value:  # "0:100,1:250"; an ISO time has "-" in its date
        return AtOffsets(_parse_offsets(value))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise RangeError(
            f"{value!r} is neither an ISO-8601 time, PARTITION:OFFSET[,PARTITION:OFFSET...], 'beginning' nor 'end'"
        ) from None
    return AtTime(round(moment.astimezone().timestamp() * 1000))  # naive times: this machine's zone


def _parse_offsets(value: str) -> dict[int, int]:
    offsets: dict[int, int] = {}
    for item in value.split(","):
        partition_text, _, offset_text = item.strip().partition(":")
        try:
            partition, offset = int(partition_text), int(offset_text)
        except ValueError:
            raise RangeError(f"{item.strip()!r} is not PARTITION:OFFSET (two whole numbers)") from None
        if partition < 0 or offset < 0:
            raise RangeError(f"{item.strip()!r}: partitions and offsets are never negative")
        if partition in offsets:
            raise RangeError(f"partition {partition} is named twice in {value!r}")
        offsets[partition] = offset
    return offsets


class OffsetLookup(Protocol):
    """The part of ``AIOKafkaConsumer`` that resolving a range needs."""

    async def beginning_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]: ...

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]: ...

    async def offsets_for_times(self, timestamps: dict[TopicPartition, int]) -> dict[TopicPartition, Any]: ...


async def resolve(
    lookup: OffsetLookup, topic: str, partitions: Sequence[int], start: Bound, end: Bound
) -> dict[int, tuple[int, int]]:
    """``{partition: (first offset, end offset exclusive)}`` of the range, for the partitions it covers.

    Offsets are clamped to what the topic holds: a start below the log start (records removed by
    retention) begins at the oldest record left; an end past the topic's end stops at its end.
    """
    known = set(partitions)
    for bound in (start, end):
        if isinstance(bound, AtOffsets) and not set(bound.offsets) <= known:
            unknown = ", ".join(map(str, sorted(set(bound.offsets) - known)))
            raise RangeError(f"{topic} has no partition {unknown} (it has {len(known)}: 0..{len(known) - 1})")
    covered = sorted(start.offsets) if isinstance(start, AtOffsets) else sorted(partitions)
    tps = [TopicPartition(topic, p) for p in covered]
    if not tps:
        return {}
    first = {tp.partition: offset for tp, offset in (await lookup.beginning_offsets(tps)).items()}
    last = {tp.partition: offset for tp, offset in (await lookup.end_offsets(tps)).items()}
    starts = await _offsets_at(lookup, topic, start, first, last)
    ends = await _offsets_at(lookup, topic, end, first, last)
    spans = {}
    for p in covered:
        begin = min(max(starts[p], first[p]), last[p])
        spans[p] = (begin, max(begin, min(ends[p], last[p])))
    return spans


async def _offsets_at(
    lookup: OffsetLookup, topic: str, bound: Bound, first: dict[int, int], last: dict[int, int]
) -> dict[int, int]:
    if bound == BEGINNING:
        return dict(first)
    if bound == END:
        return dict(last)
    if isinstance(bound, AtOffsets):
        return {p: bound.offsets.get(p, last[p]) for p in last}
    assert isinstance(bound, AtTime)
    found = await lookup.offsets_for_times({TopicPartition(topic, p): bound.epoch_ms for p in last})
    # No record at or after the time: the partition's end.
    return {tp.partition: (hit.offset if hit is not None else last[tp.partition]) for tp, hit in found.items()}
