"""A replay's checkpoint: what it replays, with which model, and how far it has come.

One record per committed batch on ``replay.checkpoints`` (compacted, key = replay id), written in the
same Kafka transaction as that batch's decisions: a reader with ``read_committed`` sees both or
neither. The latest checkpoint of a replay id is therefore exactly where its committed output ends,
which is what makes a resume free of gaps and duplicates.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from medroute.config import REPLAY_CHECKPOINTS, KafkaSettings
from medroute.records import utc_now
from tools.operations.replay.reading import read_committed

SCHEMA_VERSION = 1


@dataclass
class Checkpoint:
    replay_id: str
    source_topic: str
    output_topic: str
    model: str  # "name@version" the decisions are made with
    routes: str  # the rules file, as given
    routes_sha256: str
    range_from: str  # --from / --to as given, for a rerun of the same command to be recognised
    range_to: str
    start: dict[int, int]  # partition -> first offset of the range
    end: dict[int, int]  # partition -> end offset (exclusive), fixed when the replay started
    next: dict[int, int]  # partition -> first offset not yet decided
    decided: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> records that were not decidable
    started_at: str = field(default_factory=utc_now)
    updated_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    schema: int = SCHEMA_VERSION

    @property
    def total(self) -> int:
        return sum(self.end[p] - self.start[p] for p in self.start)

    @property
    def done(self) -> int:
        """Offsets of the range already behind the replay (decided, rejected or absent from the log)."""
        return sum(self.next[p] - self.start[p] for p in self.start)

    @property
    def remaining(self) -> dict[int, tuple[int, int]]:
        return {p: (self.next[p], self.end[p]) for p in sorted(self.start) if self.next[p] < self.end[p]}

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, payload: bytes | str) -> Checkpoint:
        data: dict[str, Any] = json.loads(payload)
        for name in ("start", "end", "next"):
            data[name] = {int(p): int(offset) for p, offset in data[name].items()}  # JSON keys are strings
        return cls(**data)


async def latest_checkpoint(settings: KafkaSettings, replay_id: str, timeout: float = 90.0) -> Checkpoint | None:
    """The last committed checkpoint of ``replay_id``, or None when there is none."""
    latest: Checkpoint | None = None
    key = replay_id.encode("utf-8")
    async for record in read_committed(settings, REPLAY_CHECKPOINTS, timeout=timeout):
        if record.key == key and record.value is not None:
            latest = Checkpoint.from_json(record.value)
    return latest


async def latest_checkpoints(settings: KafkaSettings, timeout: float = 90.0) -> list[Checkpoint]:
    """The last committed checkpoint of every replay on the checkpoint topic."""
    latest: dict[bytes, Checkpoint] = {}
    async for record in read_committed(settings, REPLAY_CHECKPOINTS, timeout=timeout):
        if record.key is not None and record.value is not None:
            latest[record.key] = Checkpoint.from_json(record.value)
    return list(latest.values())
