"""Receivers for the forwarding tests, none written here: python-hl7's MLLP server (hl7_receiver.py), DCMTK
storescp and Orthanc; and the forwarder as a child process, fed decisions as the worker publishes them."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from formats.hl7.record import record_of_bytes
from listeners.dicom.events import file_record
from medroute.blobstore import BlobStore
from medroute.config import REPO_ROOT, KafkaSettings
from medroute.ports import free_port, wait_for_port
from pipeline.outcomes import Decided
from tests.integration.conftest import DICOM_TEST_BLOB_KEY
from tests.integration.dicom_peers import dcmtk_env
from tests.integration.processes import ChildProcess
from tools.benchmarks.common import decided_item, publish_decided


def hl7_message(n: int, patient: str) -> bytes:
    return (
        f"MSH|^~\\&|LAB|NORTH|EHR|NORTH|20260101120000||ORU^R01^ORU_R01|C{n:05d}|P|2.5\r"
        f"PID|1||{patient}^^^NORTH^MR||DOE^JANE\r"
        f"OBX|1|TX|REPORT||Report number {n} for the chart.||||||F\r"
    ).encode()


def hl7_decision(raw: bytes, destinations: list[str]) -> Decided:
    """The item as the listener stores it and its decision as the worker makes it (for the forwarder)."""
    return decided_item(record_of_bytes(raw), destinations, rule="test")


def dicom_decision(path: Path, blobs: BlobStore, destinations: list[str]) -> Decided:
    """The decision for a file stored in ``blobs`` as the listener stores it (Part-10 bytes)."""
    data = path.read_bytes()
    return decided_item(file_record(data, blobs.put(data), "127.0.0.1"), destinations, rule="images")


def publish_sync(kafka: KafkaSettings, decided: Iterable[Decided]) -> None:
    """Each item's inbound record, then its decision pointing at it, as the worker publishes them."""
    asyncio.run(publish_decided(kafka, list(decided)))


@dataclass
class Hl7Receiver:
    port: int
    log_path: Path
    ack: str = "AA"
    delay: float = 0.0
    process: subprocess.Popen | None = None

    def start(self) -> Hl7Receiver:
        command = [sys.executable, "-m", "tests.integration.hl7_receiver", "--port", str(self.port),
                   "--log", str(self.log_path), "--ack", self.ack, "--delay", str(self.delay)]  # fmt: skip
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, 30, self.process)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def received(self) -> list[tuple[float, str, str]]:
        """(time, MSH-10, PID-3) of every message received, in order."""
        if not self.log_path.exists():
            return []
        rows = [line.split() for line in self.log_path.read_text().splitlines() if line.strip()]
        return [(float(t), control, patient.split("^")[0]) for t, control, patient in rows]


def wait_until(predicate, timeout: float, step: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def start_forwarder(kafka: KafkaSettings, home: Path, destinations: Path, **env: str) -> ChildProcess:
    return ChildProcess(
        "pipeline.forward",
        {
            "MEDROUTE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
            "MEDROUTE_HOME": str(home),
            "MEDROUTE_DESTINATIONS": str(destinations),
            "MEDROUTE_BLOB_DIR": str(home / "blobs"),
            "MEDROUTE_BLOB_KEY": DICOM_TEST_BLOB_KEY.hex(),
            "MEDROUTE_FORWARD_RELOAD_SECONDS": "0.5",
            "MEDROUTE_FORWARD_STATUS_SECONDS": "0.5",
            **env,
        },
        log_path=home / f"forward-{time.time_ns()}.log",
    ).start()


@dataclass
class Orthanc:
    """Orthanc (Debian's package) with a config and storage of its own, checked through its REST API."""

    directory: Path
    http_port: int = 0
    dicom_port: int = 0
    process: subprocess.Popen | None = None

    def start(self) -> Orthanc:
        self.http_port, self.dicom_port = free_port(), free_port()
        config = {
            "Name": "medroute-test", "StorageDirectory": str(self.directory / "storage"),
            "IndexDirectory": str(self.directory / "index"), "HttpPort": self.http_port,
            "DicomPort": self.dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "HttpServerEnabled": True,
        }  # fmt: skip
        path = self.directory / "orthanc.json"
        self.directory.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config))
        log = open(self.directory / "orthanc.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen([shutil.which("Orthanc") or "/usr/sbin/Orthanc", str(path)],
                                        stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        wait_for_port(self.http_port, 60, self.process)
        wait_for_port(self.dicom_port, 60, self.process)
        return self

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as response:
            return response.read()

    def json(self, path: str):  # type: ignore[no-untyped-def]
        return json.loads(self.get(path))

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)


@dataclass
class StoreScp:
    """DCMTK storescp in bit-preserving mode (+B: the dataset is written exactly as received)."""

    directory: Path
    port: int = 0
    accept_all: bool = False
    options: tuple[str, ...] = ()  # more of storescp's options, e.g. TLS
    process: subprocess.Popen | None = None

    def start(self) -> StoreScp:
        self.port = self.port or free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        accept = ["+xa"] if self.accept_all else []
        command = ["storescp", "+B", "-od", str(self.directory), "-aet", "STORESCP", *accept, *self.options,
                   str(self.port)]  # fmt: skip
        self.process = subprocess.Popen(command, env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, 30, self.process)
        return self

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
