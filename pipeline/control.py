"""Model promotion without a restart: workers follow the control topic and switch model versions.

``medroute promote NAME@VERSION`` writes a :class:`ModelPromotion` to ``medroute.control`` (compacted,
keyed by task, so the latest promotion per task is kept forever). Every worker reads the whole topic
with its own group-less consumer — a promotion is for all workers, not for one member of a group:

* at start, before it consumes anything, the latest promotion per task decides which model loads
  (a worker started after a promotion runs the promoted version, whatever its environment says);
* while running, each new promotion is loaded beside the current model and then swapped in whole,
  so a micro-batch is decided by one version from start to end, and decisions made after the swap
  carry the new ``name@version``.

A promotion the worker cannot follow (the bundle is not installed here, it is altered, or the routing
rules name labels it does not have) is refused: the worker keeps its model and says so in an audit event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import TopicPartition

from medroute.config import AUDIT_EVENTS, CONTROL, KafkaSettings
from medroute.kafka.client import reader_of
from medroute.records import AuditEvent, ModelPromotion
from pipeline.publish import Outbound, Publisher

log = structlog.get_logger(__name__)

ACTOR = "worker"


@dataclass
class ModelSlot:
    """Where one task's model lives in a running worker."""

    task: str  # "text_classification" | "image_classification"
    ref: str  # the model in use, "name@version"
    load: Callable[[str], Any]  # name@version -> checked, loaded model; raises when it cannot be used
    install: Callable[[Any], None]  # makes the agent use the loaded model for its next micro-batch


async def read_promotions(settings: KafkaSettings) -> tuple[dict[str, ModelPromotion], dict[TopicPartition, int]]:
    """The latest promotion per task, and the end offsets up to which the topic was read."""
    reader = await reader_of(settings, CONTROL)
    try:
        partitions = list(reader.assignment())
        ends = await reader.end_offsets(partitions)
        latest: dict[str, ModelPromotion] = {}
        while [tp for tp, end in ends.items() if await reader.position(tp) < end]:
            for records in (await reader.getmany(timeout_ms=1000)).values():
                for record in records:
                    promotion = parse(record.value)
                    if promotion is not None:
                        latest[promotion.task] = promotion
        return latest, ends
    finally:
        await reader.stop()


def parse(payload: bytes | None) -> ModelPromotion | None:
    try:
        return ModelPromotion.from_json(payload or b"")
    except (ValueError, TypeError):
        log.warning("control_record_unreadable")
        return None


class PromotionFollower:
    """Applies promotions read after start-up to the worker's model slots."""

    def __init__(self, slots: Sequence[ModelSlot], publisher: Publisher, executor: Executor) -> None:
        self.slots = {slot.task: slot for slot in slots}
        self.publisher = publisher
        self.executor = executor

    async def apply(self, promotion: ModelPromotion) -> bool:
        """Switch the slot of ``promotion.task``; False when refused (the audit event says why)."""
        slot = self.slots.get(promotion.task)
        if slot is None or slot.ref == promotion.model:
            return False
        previous = slot.ref
        details: dict[str, Any] = {
            "task": promotion.task,
            "model": promotion.model,
            "previous": previous,
            "by": promotion.by,
            "command_id": promotion.command_id,
        }
        try:
            loaded = await asyncio.get_running_loop().run_in_executor(self.executor, slot.load, promotion.model)
        except Exception as exc:
            log.error("promotion_refused", task=promotion.task, model=promotion.model, error=str(exc)[:300])
            await self._audit({**details, "applied": False, "reason": str(exc)[:300]})
            return False
        slot.install(loaded)
        slot.ref = promotion.model
        log.info("model_promoted", task=promotion.task, model=promotion.model, previous=previous)
        await self._audit({**details, "applied": True})
        return True

    async def follow(self, settings: KafkaSettings, start: dict[TopicPartition, int]) -> None:
        """Apply every promotion written after ``start`` (the offsets start-up read up to), forever."""
        reader = await reader_of(settings, CONTROL)
        try:
            for partition, offset in start.items():
                reader.seek(partition, offset)
            while True:
                for records in (await reader.getmany(timeout_ms=1000)).values():
                    for record in records:
                        promotion = parse(record.value)
                        if promotion is not None:
                            await self.apply(promotion)
        finally:
            await reader.stop()

    async def _audit(self, details: dict[str, Any]) -> None:
        event = AuditEvent(action="promote", actor=ACTOR, message_id=None, details=details)
        await self.publisher.publish([Outbound(AUDIT_EVENTS, details["task"].encode(), event.to_json())])
