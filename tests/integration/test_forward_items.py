"""Where a forwarder reads an HL7 item (its record on ``hl7.inbound``), against a broker of the test's own:
a broker that is down is a reason to wait, only a record the log no longer holds is a reason to give up."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from medroute.config import HL7_INBOUND, KafkaSettings
from medroute.kafka.client import connection_kwargs, durable_producer
from pipeline.forward.errors import PermanentError, SourceUnavailableError
from pipeline.forward.items import InboundRecords
from shell.broker import LocalBroker


async def write(kafka: KafkaSettings, values: list[bytes]) -> list[str]:
    producer = durable_producer(kafka)
    await producer.start()
    try:
        sent = [await producer.send_and_wait(HL7_INBOUND, value, partition=0) for value in values]
    finally:
        await producer.stop()
    return [f"{HL7_INBOUND}:{meta.partition}:{meta.offset}" for meta in sent]


def test_a_broker_that_is_down_makes_the_read_retryable_not_a_missing_item(own_broker: LocalBroker) -> None:
    kafka = KafkaSettings(bootstrap=own_broker.bootstrap, partitions=2)
    place = asyncio.run(write(kafka, [b"first"]))[0]

    async def read_while_down() -> type[Exception]:
        records = InboundRecords(kafka)
        await records.start()
        try:
            own_broker.kill()
            with pytest.raises((SourceUnavailableError, PermanentError)) as raised:
                await records.get(place)
            await asyncio.to_thread(own_broker.start)  # it probes with an event loop of its own
            assert await records.get(place) == b"first"  # once the broker is back, the same reader reads it
            return raised.type
        finally:
            await records.stop()

    # Before: an empty fetch from a broker that was down read as "no longer in the log": a dead letter.
    assert asyncio.run(read_while_down()) is SourceUnavailableError


def test_a_record_the_log_no_longer_holds_is_a_missing_item(own_broker: LocalBroker) -> None:
    kafka = KafkaSettings(bootstrap=own_broker.bootstrap, partitions=2)
    places = asyncio.run(write(kafka, [b"old", b"kept"]))

    async def read_after_retention() -> None:
        admin = AIOKafkaAdminClient(**connection_kwargs(kafka))
        await admin.start()
        try:  # what retention does to old records
            await admin.delete_records({TopicPartition(HL7_INBOUND, 0): RecordsToDelete(int(places[1].split(":")[2]))})
        finally:
            await admin.close()
        records = InboundRecords(kafka)
        await records.start()
        try:
            assert await records.get(places[1]) == b"kept"
            with pytest.raises(PermanentError, match="no longer in the log"):
                await records.get(places[0])
        finally:
            await records.stop()

    asyncio.run(read_after_retention())
