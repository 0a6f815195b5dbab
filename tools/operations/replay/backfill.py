"""``medroute promote --backfill REPLAY_ID``: the replay's decisions that differ from the live ones,
published to ``routing.decisions`` so that forwarders deliver the corrections.

Each keeps its ``replay_id`` and ``model``, so a consumer can tell a backfilled decision from a live one.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from medroute.config import ROUTING_DECISIONS, KafkaSettings
from medroute.kafka.client import durable_producer
from medroute.records import RoutingDecision
from tools.operations.replay.checkpoint import latest_checkpoint
from tools.operations.replay.diff import DecisionView
from tools.operations.replay.diff_command import last_decisions, range_ids


async def changed_decisions(settings: KafkaSettings, replay_id: str) -> list[RoutingDecision]:
    """The replayed decisions whose label or destinations differ from the live decision, made deliverable as
    the live one is: its ordering key (so a correction queues behind the patient's or the study's other
    decisions) and an image's blob reference, which a replayed decision does not carry."""
    checkpoint = await latest_checkpoint(settings, replay_id)
    if checkpoint is None:
        raise LookupError(f"no replay {replay_id!r} (no checkpoint on the checkpoint topic)")
    wanted = set(await range_ids(settings, checkpoint))
    live, _ = await last_decisions(settings, ROUTING_DECISIONS, wanted, None)
    replayed, _ = await last_decisions(settings, checkpoint.output_topic, wanted, replay_id)
    changed = []
    for message_id, decision in replayed.items():
        before = live.get(message_id)
        if before is None:
            continue
        was, now = DecisionView.of(before), DecisionView.of(decision)
        if (was.label, was.destinations) != (now.label, now.destinations):
            corrected = RoutingDecision.from_dict(decision)
            changed.append(replace(corrected, order_key=before.get("order_key"), blob=before.get("blob")))
    return changed


async def backfill(settings: KafkaSettings, replay_id: str) -> int:
    """Publish the changed decisions of ``replay_id``, keyed as the worker keys decisions; how many there were."""
    changed = await changed_decisions(settings, replay_id)
    producer = durable_producer(settings)
    await producer.start()
    try:
        sends = [
            await producer.send(ROUTING_DECISIONS, key=(d.order_key or d.message_id).encode(), value=d.to_json())
            for d in changed
        ]
        await asyncio.gather(*sends)  # raises if any was not stored
    finally:
        await producer.stop()
    return len(changed)
