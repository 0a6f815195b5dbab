"""Where listeners put what they receive: the seam between a protocol edge and durable storage.

A listener acknowledges an item only after :meth:`RecordSink.put` has returned, so ``put`` must mean
"durably stored" and must fail fast otherwise (the sender then gets a negative answer and retries).
:class:`KafkaSink` is the production sink; unit tests pass an in-memory one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Protocol

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from medroute.config import KafkaSettings
from medroute.kafka.client import durable_producer

log = structlog.get_logger("listeners.sink")


class SinkUnavailable(Exception):  # noqa: N818 - the name the listeners' contract uses
    """The record was not (or not certainly) stored; the caller must not acknowledge it."""


class RecordSink(Protocol):
    async def put(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Return once the record is durably stored; raise :class:`SinkUnavailable` otherwise."""
        ...


def _consume_result(future: asyncio.Future) -> None:
    # A send we stopped waiting for may still finish later; take its outcome so asyncio does not warn.
    if not future.cancelled():
        future.exception()


class KafkaSink:
    """Idempotent ``acks=all`` Kafka producer with bounded waits and automatic recovery.

    While the broker is down a put fails after ``timeout`` seconds; aiokafka reconnects by itself when
    the broker returns. A producer that has reached a fatal state (fenced, out-of-order sequence, a
    dead sender task) is replaced, and a producer that could not start is retried on a later put,
    at most once per ``restart_backoff`` seconds, so the listener never needs a restart.

    A send that timed out may still be written later (the producer keeps retrying it): the sender got
    a negative ACK and resends, so this can store a message twice but never acknowledges a loss.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        timeout: float = 5.0,
        restart_backoff: float = 1.0,
        producer_factory: Callable[..., AIOKafkaProducer] = durable_producer,
    ) -> None:
        self._settings = settings
        self._producer_factory = producer_factory
        self._timeout = timeout
        self._restart_backoff = restart_backoff
        self._producer: AIOKafkaProducer | None = None
        self._last_start_failure = float("-inf")
        self._lock = asyncio.Lock()
        self._closed = False

    async def start(self) -> None:
        """Connect now if the broker is there; if not, log it and keep trying on each put."""
        try:
            await self._ensure_producer()
        except SinkUnavailable as exc:
            log.warning("sink.kafka_unavailable_at_start", error=str(exc))

    async def stop(self) -> None:
        self._closed = True
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await self._close_producer(producer)

    async def put(self, topic: str, key: bytes | None, value: bytes) -> None:
        if self._closed:
            raise SinkUnavailable("sink is stopped")
        producer = await self._ensure_producer()
        try:
            async with asyncio.timeout(self._timeout):
                delivery = await producer.send(topic, value, key=key)
                delivery.add_done_callback(_consume_result)
                await asyncio.shield(delivery)
        except TimeoutError:
            raise SinkUnavailable(f"Kafka did not confirm the write within {self._timeout:g}s") from None
        except MessageSizeTooLargeError as exc:
            raise SinkUnavailable(f"record too large for Kafka: {exc}") from None
        except KafkaError as exc:
            if not exc.retriable:
                log.warning("sink.producer_replaced", error=type(exc).__name__)
                await self._discard(producer)
            raise SinkUnavailable(f"Kafka write failed: {type(exc).__name__}") from None

    async def _ensure_producer(self) -> AIOKafkaProducer:
        producer = self._producer
        if producer is not None:
            return producer
        async with self._lock:
            if self._producer is not None:
                return self._producer
            if time.monotonic() - self._last_start_failure < self._restart_backoff:
                raise SinkUnavailable("Kafka unreachable (retrying shortly)")
            producer = self._producer_factory(self._settings, request_timeout_ms=int(self._timeout * 1000))
            try:
                await asyncio.wait_for(producer.start(), self._timeout)
            except (KafkaError, OSError, TimeoutError) as exc:
                self._last_start_failure = time.monotonic()
                await self._close_producer(producer)
                raise SinkUnavailable(f"cannot connect to Kafka at {self._settings.bootstrap_servers}") from exc
            self._producer = producer
            log.info("sink.kafka_connected", bootstrap=self._settings.bootstrap_servers)
            return producer

    async def _discard(self, producer: AIOKafkaProducer) -> None:
        async with self._lock:
            if self._producer is producer:
                self._producer = None
        asyncio.get_running_loop().create_task(self._close_producer(producer))

    async def _close_producer(self, producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), self._timeout)
