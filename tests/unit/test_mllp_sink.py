"""KafkaSink without a broker: fails fast, never hangs, and tries again later."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber

from listeners.sink import KafkaSink, RecordSink, SinkUnavailable
from medroute.config import KafkaSettings
from medroute.ports import free_port


async def test_unreachable_broker_fails_fast_and_backs_off() -> None:
    sink = KafkaSink(KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}"), timeout=2.0, restart_backoff=30)
    await sink.start()  # logs, does not raise: the listener comes up before Kafka after a reboot
    began = time.monotonic()
    with pytest.raises(SinkUnavailable):
        await sink.put("hl7.inbound", b"k", b"v")  # within the back-off: refused at once
    assert time.monotonic() - began < 1.0
    await sink.stop()
    with pytest.raises(SinkUnavailable):
        await sink.put("hl7.inbound", b"k", b"v")


async def test_put_reconnects_after_back_off() -> None:
    sink = KafkaSink(KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}"), timeout=2.0, restart_backoff=0)
    began = time.monotonic()
    for _ in range(2):
        with pytest.raises(SinkUnavailable):
            await sink.put("hl7.inbound", None, b"v")
    assert time.monotonic() - began < 10
    await sink.stop()


def test_kafka_sink_is_a_record_sink() -> None:
    sink: RecordSink = KafkaSink(KafkaSettings(bootstrap="127.0.0.1:1"))
    assert callable(sink.put)


class StubProducer:
    """Stands in for AIOKafkaProducer: each send resolves with the next scripted outcome."""

    def __init__(self, outcomes: list[BaseException | str | None]) -> None:
        self.outcomes = outcomes
        self.started = self.stopped = False
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome == "hang":
            return future  # never confirmed
        if outcome is None:
            self.sent.append((topic, key, value))
            future.set_result(None)
        else:
            future.set_exception(outcome)
        return future


def factory(*producers: StubProducer):  # type: ignore[no-untyped-def]
    queue = list(producers)
    created: list[StubProducer] = []

    def make(settings: KafkaSettings, **overrides: object) -> StubProducer:
        producer = queue.pop(0)
        created.append(producer)
        return producer

    return make, created


async def test_fatal_producer_state_is_replaced() -> None:
    first, second = StubProducer([OutOfOrderSequenceNumber()]), StubProducer([None])
    make, created = factory(first, second)
    sink = KafkaSink(KafkaSettings(bootstrap="127.0.0.1:1"), timeout=1.0, producer_factory=make)
    await sink.start()
    with pytest.raises(SinkUnavailable):
        await sink.put("t", b"k", b"v1")
    await sink.put("t", b"k", b"v2")  # a fresh producer, no restart of anything else
    assert created == [first, second]
    await asyncio.sleep(0)
    assert first.stopped and second.sent == [("t", b"k", b"v2")]
    await sink.stop()
    assert second.stopped


async def test_retriable_error_keeps_the_producer() -> None:
    only = StubProducer([KafkaConnectionError(), None])
    make, created = factory(only)
    sink = KafkaSink(KafkaSettings(bootstrap="127.0.0.1:1"), timeout=1.0, producer_factory=make)
    with pytest.raises(SinkUnavailable):
        await sink.put("t", None, b"v1")
    await sink.put("t", None, b"v2")
    assert created == [only]
    await sink.stop()


async def test_unconfirmed_send_times_out() -> None:
    make, _ = factory(StubProducer(["hang"]))
    sink = KafkaSink(KafkaSettings(bootstrap="127.0.0.1:1"), timeout=0.3, producer_factory=make)
    began = time.monotonic()
    with pytest.raises(SinkUnavailable, match="did not confirm"):
        await sink.put("t", None, b"v")
    assert time.monotonic() - began < 1.0
    await sink.stop()
