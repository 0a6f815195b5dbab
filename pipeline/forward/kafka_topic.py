"""The ``kafka`` destination: the item (``body: raw``) or the decision as JSON (``body: decision``) on a
topic, keyed by the decision's ordering key, for downstream systems that read Kafka. Written with the
forwarder's idempotent ``acks=all`` producer; the topic must exist (medroute does not create it)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError

from pipeline.forward.destinations import Destination
from pipeline.forward.errors import PermanentError, RetryableError
from pipeline.forward.items import Item


class KafkaTopicSender:
    def __init__(self, destination: Destination, producer: AIOKafkaProducer) -> None:
        self.destination = destination
        self._producer = producer
        self._topic = destination.option("topic")
        self._body = destination.option("body", "raw")

    async def send(self, item: Item) -> str:
        value = item.decision_body() if self._body == "decision" else item.content
        key = (item.decision.order_key or item.message_id).encode()
        try:
            metadata = await self._producer.send_and_wait(self._topic, value, key=key)
        except UnknownTopicOrPartitionError as exc:
            raise PermanentError("unknown_topic", str(exc)) from None
        except KafkaError as exc:
            raise RetryableError(type(exc).__name__, str(exc)) from None
        return f"offset {metadata.partition}:{metadata.offset}"

    async def close(self) -> None:
        return None
