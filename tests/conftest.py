"""Shared test fixtures: the real Kafka broker, started once per test session."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from medroute.config import KafkaSettings
from medroute.kafka.topics import ensure_topics
from medroute.ports import free_port
from shell.broker import LocalBroker


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A real single-node Apache Kafka (KRaft) on free loopback ports, for this session only."""
    data_dir: Path = tmp_path_factory.mktemp("kafka")
    broker = LocalBroker(data_dir=data_dir, port=free_port(), controller_port=free_port())
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka(kafka_broker: LocalBroker) -> KafkaSettings:
    """Settings pointing at the session broker, with all medroute topics created."""
    settings = KafkaSettings(bootstrap=kafka_broker.bootstrap, partitions=4, replication=1)
    asyncio.run(ensure_topics(settings))
    os.environ["MEDROUTE_KAFKA_BOOTSTRAP"] = kafka_broker.bootstrap  # for subprocesses
    return settings
