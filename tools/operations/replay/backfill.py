"""``medroute promote --backfill REPLAY_ID``: the replay's decisions that differ from the live ones,
published to ``routing.decisions`` so that forwarders deliver the corrections.

Each keeps its ``replay_id`` and ``model``, so a consumer can tell a backfilled decision from a live one.
"""

from __future__ import annotations

import asyncio
import json

from medroute.config import ROUTING_DECISIONS, KafkaSettings
from medroute.kafka.client import durable_producer
from tools.operations.replay.checkpoint import latest_checkpoint
from tools.operations.replay.diff import DecisionView
from tools.operations.replay.diff_command import last_decisions, range_ids
from tools.operations.replay.reading import read_committed


async def changed_decisions(settings: KafkaSettings, replay_id: str) -> list[bytes]:
    """The replayed decisions (as stored) whose label or destinations differ from the live decision."""
    checkpoint = await latest_checkpoint(settings, replay_id)
    if checkpoint is None:
        raise LookupError(f"no replay {replay_id!r} (no checkpoint on the checkpoint topic)")
    wanted = set(await range_ids(settings, checkpoint))
    live, _ = await last_decisions(settings, ROUTING_DECISIONS, wanted, None)
    replayed: dict[str, bytes] = {}
    async for record in read_committed(settings, checkpoint.output_topic):
        decision = json.loads(record.value)
        if decision.get("replay_id") == replay_id and decision.get("message_id") in wanted:
            replayed[decision["message_id"]] = record.value  # the last one per message counts
    changed = []
    for message_id, value in replayed.items():
        before, after = live.get(message_id), DecisionView.of(json.loads(value))
        if before is not None and (before.label, before.destinations) != (after.label, after.destinations):
            changed.append(value)
    return changed


async def backfill(settings: KafkaSettings, replay_id: str) -> int:
    """Publish the changed decisions of ``replay_id``; how many there were."""
    changed = await changed_decisions(settings, replay_id)
    producer = durable_producer(settings)
    await producer.start()
    try:
        sends = [
            await producer.send(ROUTING_DECISIONS, key=json.loads(value)["message_id"].encode(), value=value)
            for value in changed
        ]
        await asyncio.gather(*sends)  # raises if any was not stored
    finally:
        await producer.stop()
    return len(changed)
