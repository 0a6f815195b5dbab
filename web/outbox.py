"""What the web server writes to Kafka: feedback and audit events (awaited: a correction is stored before
the reviewer is told so), and the audit events of API calls (queued, sent in the background, so that a
classification does not wait for Kafka and works while Kafka is away)."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaProducer

from medroute.config import AUDIT_EVENTS, KafkaSettings
from medroute.kafka.client import durable_producer
from medroute.records import AuditEvent
from web import metrics

log = structlog.get_logger(__name__)
QUEUE_LIMIT = 10_000
RETRY_SECONDS = 2.0


class KafkaUnavailableError(Exception):
    """Kafka cannot take a write now (not connected, or the send failed); the API answers 503."""


class Outbox:
    def __init__(self, settings: KafkaSettings | None) -> None:
        self.settings = settings  # None: no Kafka (a classify-only server)
        self._producer: AIOKafkaProducer | None = None
        self._queue: asyncio.Queue[tuple[str, bytes, bytes]] = asyncio.Queue(QUEUE_LIMIT)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def connected(self) -> bool:
        return self._producer is not None

    def start(self) -> None:
        if self.settings is not None:
            self._tasks = [asyncio.create_task(self._connect()), asyncio.create_task(self._drain())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _connect(self) -> None:
        assert self.settings is not None
        while self._producer is None:
            producer = durable_producer(self.settings)
            try:
                await producer.start()
            except Exception as exc:  # Kafka not there yet: the API serves classifications meanwhile
                log.warning("kafka_unavailable", error=type(exc).__name__, retry_s=RETRY_SECONDS)
                await producer.stop()
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self._producer = producer

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Store one record (acks=all) or raise :class:`KafkaUnavailableError`."""
        if self._producer is None:
            raise KafkaUnavailableError("Kafka is not connected")
        try:
            await self._producer.send_and_wait(topic, key=key, value=value)
        except Exception as exc:
            raise KafkaUnavailableError(f"Kafka did not store the record ({type(exc).__name__})") from None

    async def audit(self, event: AuditEvent) -> None:
        await self.send(AUDIT_EVENTS, (event.message_id or event.event_id).encode(), event.to_json())

    def audit_later(self, event: AuditEvent) -> None:
        """Queue an audit event; when the queue is full (Kafka away for long) it is counted and dropped."""
        if self.settings is None:
            return  # a classify-only server keeps no audit trail on Kafka
        try:
            self._queue.put_nowait((AUDIT_EVENTS, (event.message_id or event.event_id).encode(), event.to_json()))
        except asyncio.QueueFull:
            metrics.AUDIT_DROPPED.inc()

    async def _drain(self) -> None:
        while True:
            topic, key, value = await self._queue.get()
            while True:
                try:
                    await self.send(topic, key, value)
                    break
                except KafkaUnavailableError:
                    await asyncio.sleep(RETRY_SECONDS)
