"""What the worker writes to Kafka for each outcome, and the seam through which it is written.

``Publisher`` is the I/O edge: the worker uses :class:`FaustPublisher`; unit tests pass a recorder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import faust

from medroute.config import AUDIT_EVENTS, ROUTING_DECISIONS
from pipeline.audit import events_for
from pipeline.outcomes import Outcome, Rejected


@dataclass(frozen=True)
class Outbound:
    topic: str
    key: bytes
    value: bytes
    partition: int | None = None  # None: the producer's partitioner picks by key


class Publisher(Protocol):
    async def publish(self, messages: Sequence[Outbound]) -> None:
        """Return only when every message is stored (acks=all); raise if any is not."""


def messages_for(outcome: Outcome) -> list[Outbound]:
    """The decision (or dead letter) and the audit events of one outcome, keyed by message id."""
    if isinstance(outcome, Rejected):
        key = outcome.dead_letter.message_id.encode()
        primary = Outbound(outcome.topic, key, outcome.dead_letter.to_json())
    else:
        key = outcome.message_id.encode()
        primary = Outbound(ROUTING_DECISIONS, key, outcome.decision.to_json())
    return [primary, *(Outbound(AUDIT_EVENTS, key, event.to_json()) for event in events_for(outcome))]


class FaustPublisher:
    """Sends through the Faust app's producer and waits for every delivery report.

    Straight to the producer (not ``Topic.send``): the worker's outputs are raw bytes already, and each
    ``Topic.send`` builds futures and pending-message objects that cost more than the send itself.
    All messages of a micro-batch are handed over first and awaited together, so they travel in few
    produce requests.
    """

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def publish(self, messages: Sequence[Outbound]) -> None:
        producer = self._app.producer
        deliveries = [await producer.send(m.topic, m.key, m.value, m.partition, None, None) for m in messages]
        await asyncio.gather(*deliveries)
