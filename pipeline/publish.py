"""What the worker writes to Kafka for each outcome, and the seam through which it is written.

``Publisher`` is the I/O edge: the worker uses :class:`FaustPublisher`; unit tests pass a recorder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import faust

from medroute.config import AUDIT_EVENTS, ROUTING_DECISIONS
from medroute.records import DicomRecord, RoutingDecision
from pipeline.audit import events_for
from pipeline.outcomes import Decided, Outcome, Rejected


@dataclass(frozen=True)
class Outbound:
    topic: str
    key: bytes
    value: bytes
    partition: int | None = None  # None: the producer's partitioner picks by key


class Publisher(Protocol):
    async def publish(self, messages: Sequence[Outbound]) -> None:
        """Return only when every message is stored (acks=all); raise if any is not."""


def messages_for(outcome: Outcome, source_offset: str | None = None) -> list[Outbound]:
    """The decision (or dead letter) and the audit events of one outcome; ``source_offset`` is where the
    decided record sits (``topic:partition:offset``).

    Audit events and dead letters are keyed by message id; a decision by its ordering key (see
    :func:`forwardable`), so that the forwarders see one patient's or one study's decisions in order.
    """
    if isinstance(outcome, Rejected):
        key = outcome.dead_letter.message_id.encode()
        primary = Outbound(outcome.topic, key, outcome.dead_letter.to_json())
    else:
        key = outcome.message_id.encode()
        decision = forwardable(outcome, source_offset)
        primary = Outbound(ROUTING_DECISIONS, (decision.order_key or outcome.message_id).encode(), decision.to_json())
    return [primary, *(Outbound(AUDIT_EVENTS, key, event.to_json()) for event in events_for(outcome))]


def forwardable(outcome: Decided, source_offset: str | None) -> RoutingDecision:
    """The decision with what a forwarder needs, and no PHI: its ordering key (a keyed hash of the patient or
    the study, also its Kafka key), where the item's record sits, and for an image the blob reference (a
    digest). The forwarders read the HL7 message's bytes from the inbound record, so decisions stay free
    of report text and identifiers."""
    decision = replace(outcome.decision, order_key=outcome.order_key, source_offset=source_offset)
    record = outcome.record
    return replace(decision, blob=record.blob) if isinstance(record, DicomRecord) else decision


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
