"""The delivered-ids ledger across a forwarder's restart in the same process: entries Kafka did not store (the
broker restarting as the forwarder crashed) stay known and are sent again, so neither this process nor the
one a rebalance gives the partition delivers those items a second time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from medroute.config import KafkaSettings
from pipeline.forward import ledger as ledger_module
from pipeline.forward.ledger import DELIVERED, DeliveredLedger


class Producer:
    """Loses the first ``lose`` entries it is handed (their futures fail), stores the rest."""

    def __init__(self, lose: int) -> None:
        self.lose = lose
        self.stored: list[bytes] = []

    async def send(self, topic: str, value: bytes, *, key: bytes, partition: int) -> asyncio.Future:
        delivery = asyncio.get_running_loop().create_future()
        if self.lose:
            self.lose -= 1
            delivery.set_exception(KafkaTimeoutError())
        else:
            self.stored.append(key)
            delivery.set_result(None)
        return delivery


@pytest.fixture(autouse=True)
def three_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    async def partitions(kafka: Any, topic: str) -> list[int]:
        return [0, 1, 2]

    monkeypatch.setattr(ledger_module, "topic_partitions", partitions)


def test_entries_kafka_lost_stay_known_and_are_sent_again_at_the_restart() -> None:
    producer = Producer(lose=2)
    ledger = DeliveredLedger("ehr", KafkaSettings(), producer)  # type: ignore[arg-type]

    async def crash_and_restart() -> None:
        await ledger.start()
        for n in range(3):
            await ledger.record(f"m{n}", DELIVERED, 0, n)
        with pytest.raises(KafkaTimeoutError):
            await ledger.flush()  # the forwarder crashes here, commits nothing
        assert all(f"m{n}" in ledger for n in range(3))  # its next run skips them all
        await ledger.start()  # the restarted forwarder's
        await ledger.flush()

    asyncio.run(crash_and_restart())
    assert sorted(producer.stored) == [b"ehr:m0", b"ehr:m1", b"ehr:m2"]
