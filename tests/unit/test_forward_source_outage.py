"""An item that medroute's own storage cannot give back for a while (Kafka or the blob store down) waits for it:
it uses none of the item's delivery attempts and does not open the receiver's breaker; a receiver's own
retryable failure does both. ``Forwarder._deliver`` with stand-ins for its storage, receiver and producers."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.structs import ConsumerRecord

from medroute.config import FORWARD_DEADLETTER, ROUTING_DECISIONS, KafkaSettings
from medroute.records import RoutingDecision
from pipeline.forward.destinations import Destination
from pipeline.forward.errors import RetryableError, SourceUnavailableError
from pipeline.forward.forwarder import Forwarder
from pipeline.forward.items import Item
from pipeline.forward.policy import CLOSED, Backoff


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future:
        self.sent.append((topic, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send_and_wait(self, topic: str, value: bytes, **kwargs: Any) -> None:
        await self.send(topic, value, **kwargs)


class Ledger:
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def __contains__(self, message_id: str) -> bool:
        return False

    async def record(self, message_id: str, outcome: str, partition: int, offset: int) -> None:
        self.outcomes.append(outcome)


class Storage:
    """Fails the first ``failures`` reads with ``error``, then gives the item."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error

    async def item(self, decision: RoutingDecision, with_blob: bool = True) -> Item:
        if self.failures:
            self.failures -= 1
            raise self.error
        return Item(decision, b"MSH|^~\\&|")


class Receiver:
    def __init__(self) -> None:
        self.received = 0

    async def send(self, item: Item) -> str:
        self.received += 1
        return "AA"

    async def close(self) -> None:
        pass


def deliver(storage: Storage) -> tuple[bool, Forwarder, Producer, Ledger, Receiver]:
    destination = Destination(
        name="ehr", type="mllp", options={}, kinds=("hl7",), attempts=2, backoff=Backoff(initial=0.001, maximum=0.001)
    )
    producer, audit, ledger, receiver = Producer(), Producer(), Ledger(), Receiver()
    forwarder = Forwarder(destination, KafkaSettings(), receiver, producer, storage, ledger, audit)  # type: ignore[arg-type]
    decision = RoutingDecision("m-1", "hl7", "ADT^A01", None, None, None, "rule", ["ehr"])
    record = ConsumerRecord(ROUTING_DECISIONS, 0, 7, 0, 0, b"k", decision.to_json(), None, 0, 0, [])
    finished = asyncio.run(forwarder._deliver(record, decision, None))
    return finished, forwarder, producer, ledger, receiver


def test_storage_that_is_down_holds_the_item_without_using_its_attempts() -> None:
    finished, forwarder, producer, ledger, receiver = deliver(Storage(5, SourceUnavailableError("kafka_unavailable")))
    assert finished and receiver.received == 1 and ledger.outcomes == ["delivered"]
    assert not [topic for topic, _ in producer.sent if topic == FORWARD_DEADLETTER]  # 5 failed reads, 2 attempts
    assert forwarder.breaker.state == CLOSED  # the receiver did nothing wrong


def test_a_receivers_retryable_failures_use_the_attempts_and_end_in_a_dead_letter() -> None:
    finished, _, producer, ledger, receiver = deliver(Storage(5, RetryableError("AR", "busy")))
    assert finished and receiver.received == 0 and ledger.outcomes == ["deadletter"]
    assert [topic for topic, _ in producer.sent] == [FORWARD_DEADLETTER]
