"""The local broker harness: topics exist with the configured partitions, and records round-trip."""

import asyncio

from aiokafka.admin import AIOKafkaAdminClient

from medroute.config import ALL_TOPICS, KafkaSettings
from medroute.kafka.client import connection_kwargs, consumer, durable_producer
from medroute.kafka.topics import ensure_topics


async def _describe(settings: KafkaSettings) -> dict[str, int]:
    admin = AIOKafkaAdminClient(**connection_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_topics(list(ALL_TOPICS))
        return {t["topic"]: len(t["partitions"]) for t in described}
    finally:
        await admin.close()


def test_topics_created_idempotently(kafka: KafkaSettings) -> None:
    assert asyncio.run(ensure_topics(kafka)) == []  # second call creates nothing
    partitions = asyncio.run(_describe(kafka))
    assert partitions == {name: 4 for name in ALL_TOPICS}


def test_durable_round_trip(kafka: KafkaSettings) -> None:
    probe_topic = "medroute.harness-probe"  # not a medroute topic: consumers of those must not see it

    async def scenario() -> list[bytes]:
        assert await ensure_topics(kafka, names=(probe_topic,)) == [probe_topic]
        producer = durable_producer(kafka)
        await producer.start()
        try:
            meta = await producer.send_and_wait(probe_topic, b'{"probe":1}', key=b"k")
        finally:
            await producer.stop()
        reader = consumer(kafka)
        await reader.start()
        try:
            from aiokafka import TopicPartition

            tp = TopicPartition(probe_topic, meta.partition)
            reader.assign([tp])
            reader.seek(tp, meta.offset)
            batch = await reader.getmany(tp, timeout_ms=5000)
            return [r.value for r in batch.get(tp, [])]
        finally:
            await reader.stop()

    assert asyncio.run(scenario())[0] == b'{"probe":1}'


def test_a_cluster_id_that_starts_with_a_dash_formats(tmp_path) -> None:
    # base64 ids start with "-" one time in 64; the storage tool once read such an id as an option.
    from medroute.ports import free_port
    from shell.broker import LocalBroker

    broker = LocalBroker(
        data_dir=tmp_path / "kafka", port=free_port(), controller_port=free_port(), cluster_id="-startsWithADash000000"
    )
    broker.start()
    try:
        assert broker.is_serving()
    finally:
        broker.stop()
