"""Integration tests talk to the real broker of tests/conftest.py and to real peers.

The listener and the worker run as real child processes, as they do in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from medroute.config import KafkaSettings
from medroute.kafka.topics import ensure_topics
from medroute.ports import free_port
from shell.broker import LocalBroker
from tests.integration.processes import ChildProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@dataclass
class RunningListener:
    port: int
    process: ChildProcess


def start_listener(bootstrap: str, home: str, port: int | None = None, **env: str) -> RunningListener:
    port = port or free_port()
    child = ChildProcess(
        "listeners.mllp",
        {"MEDROUTE_KAFKA_BOOTSTRAP": bootstrap, "MEDROUTE_MLLP_PORT": str(port), "MEDROUTE_HOME": home, **env},
        log_path=Path(home) / f"listener-{port}.log",
    )
    child.start(port=port)
    return RunningListener(port, child)


@pytest.fixture(scope="module")
def mllp_listener(kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningListener]:
    """The MLLP listener as a child process on a free port, storing into the session broker."""
    listener = start_listener(kafka.bootstrap_servers, str(tmp_path_factory.mktemp("listener")))
    yield listener
    listener.process.stop()


@pytest.fixture(scope="module")
def worker(kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChildProcess]:
    """The Faust classification worker as a child process on the session broker."""
    home = tmp_path_factory.mktemp("worker")
    child = ChildProcess(
        "pipeline",
        {"MEDROUTE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers, "MEDROUTE_HOME": str(home)},
        log_path=home / "worker.log",
    ).start()
    yield child
    child.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of the test's own, so that stopping it disturbs no other test."""
    broker = LocalBroker(data_dir=tmp_path / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    asyncio.run(ensure_topics(KafkaSettings(bootstrap=broker.bootstrap, partitions=2)))
    yield broker
    broker.stop()


@dataclass
class RunningDicomListener:
    port: int
    process: ChildProcess
    blob_dir: Path
    blob_key: bytes


DICOM_TEST_BLOB_KEY = bytes(range(32))  # the tests read the blobs back, so they know the key


def start_dicom_listener(
    bootstrap: str, home: str, port: int | None = None, blob_dir: str | None = None, **env: str
) -> RunningDicomListener:
    port = port or free_port()
    Path(home).mkdir(parents=True, exist_ok=True)
    blobs = Path(blob_dir or Path(home) / "blobs")
    child = ChildProcess(
        "listeners.dicom",
        {
            "MEDROUTE_KAFKA_BOOTSTRAP": bootstrap,
            "MEDROUTE_DICOM_PORT": str(port),
            "MEDROUTE_HOME": home,
            "MEDROUTE_BLOB_DIR": str(blobs),
            "MEDROUTE_BLOB_KEY": DICOM_TEST_BLOB_KEY.hex(),
            **env,
        },
        log_path=Path(home) / f"dicom-listener-{port}.log",
    )
    child.start(port=port)
    return RunningDicomListener(port, child, blobs, DICOM_TEST_BLOB_KEY)


@pytest.fixture(scope="module")
def dicom_listener(kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDicomListener]:
    """The DICOM listener as a child process on a free port, storing into the session broker; calling AE
    titles other than those the tests use are rejected."""
    listener = start_dicom_listener(
        kafka.bootstrap_servers,
        str(tmp_path_factory.mktemp("dicom-listener")),
        MEDROUTE_DICOM_ALLOWED_AES="STORESCU,ECHOSCU,PYSCU",
    )
    yield listener
    listener.process.stop()
