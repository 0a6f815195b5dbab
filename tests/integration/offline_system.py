"""The whole system on one host, run by ``test_privacy.py`` (inside ``unshare -n`` where the kernel allows).

``python -m tests.integration.offline_system OUT``: brings the loopback interface up, starts a broker of
its own, the MLLP and DICOM listeners, the worker and the web server (each under ``strace -e trace=connect``
when strace is installed), sends HL7 messages, a refused message, a DICOM image and an API call that carry
marker names and identifiers, waits for the decisions, scrapes every metrics endpoint, dumps the decision,
audit and dead-letter topics (dead letters without their raw bytes) and stops everything. What it saw goes
to ``OUT``: ``summary.json``, ``logs/``, ``metrics/``, ``topics.json``, ``strace/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from formats.hl7.mllp_client import MllpClient
from medroute.config import (
    AUDIT_EVENTS,
    DICOM_DEADLETTER,
    HL7_DEADLETTER,
    REPO_ROOT,
    ROUTING_DECISIONS,
    KafkaSettings,
)
from medroute.kafka.client import reader_of
from medroute.kafka.topics import ensure_topics
from medroute.ports import free_port, wait_for_port
from shell.broker import LocalBroker
from shell.dicom_sending import send_dicom

# Invented markers: none of them may appear anywhere but the inbound topics and the blob store.
MARKERS = ("ZZMARKERSURNAME", "QQMARKERGIVEN", "MRNZZ4711X", "ZZMARKERSTREET", "555ZZ0199")
DECIDED_TOPICS = (ROUTING_DECISIONS, AUDIT_EVENTS, HL7_DEADLETTER, DICOM_DEADLETTER)


def hl7_messages() -> list[bytes]:
    pid = f"PID|1||{MARKERS[2]}^^^HOSP^MR||{MARKERS[0]}^{MARKERS[1]}||19800101|F|||1 {MARKERS[3]}^^TOWN||{MARKERS[4]}"
    report = f"OBX|1|TX|||Patient {MARKERS[0]} {MARKERS[1]} seen; chest x-ray shows no acute findings."
    msh = "MSH|^~\\&|LAB|HOSP|MEDROUTE|HOSP|20240101||{type}|{cid}|P|2.5.1"
    good = [
        "\r".join([msh.format(type="ORU^R01^ORU_R01", cid="PRIV0001"), pid, "OBR|1", report]) + "\r",
        "\r".join([msh.format(type="ADT^A01^ADT_A01", cid="PRIV0002"), "EVN|A01", pid]) + "\r",
    ]
    refused = "\r".join([msh.format(type="ORU^R01", cid=""), pid, report]) + "\r"  # no MSH-10: dead letter
    return [m.encode() for m in good] + [refused.encode()]


def marked_image(directory: Path) -> Path:
    dataset = dcmread(get_testdata_file("CT_small.dcm"))
    dataset.PatientName = f"{MARKERS[0]}^{MARKERS[1]}"
    dataset.PatientID = MARKERS[2]
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    path = directory / "marked.dcm"
    dataset.save_as(path)
    return path


class DnsWitness:
    """Inside the namespace, the host's resolver address is put on the loopback interface and answered
    here with NXDOMAIN, so that every name a process tries to resolve through DNS is recorded."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._socket: socket.socket | None = None

    def start(self) -> None:
        servers = re.findall(r"^nameserver\s+(\d+\.\d+\.\d+\.\d+)", Path("/etc/resolv.conf").read_text(), re.M)
        if not servers:
            return
        subprocess.run(["ip", "addr", "add", f"{servers[0]}/32", "dev", "lo"], check=True)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((servers[0], 53))
        threading.Thread(target=self._answer, daemon=True).start()

    def _answer(self) -> None:
        assert self._socket is not None
        while True:
            query, sender = self._socket.recvfrom(2048)
            labels, pos = [], 12
            while pos < len(query) and query[pos]:
                labels.append(query[pos + 1 : pos + 1 + query[pos]].decode("ascii", "replace"))
                pos += 1 + query[pos]
            self.names.append(".".join(labels))
            self._socket.sendto(query[:2] + b"\x81\x83" + query[4:6] + bytes(6) + query[12:], sender)


def _spawn(name: str, module: str, env: dict[str, str], out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", module]
    if shutil.which("strace"):
        trace = out / "strace" / f"{name}.txt"
        command = ["strace", "-f", "-qq", "-e", "trace=connect", "-e", "signal=none", "-o", str(trace), *command]
    with open(out / "logs" / f"{name}.log", "ab") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the medroute process itself (strace's child when traced), then wait for it."""
    targets = [process.pid]
    if Path(f"/proc/{process.pid}/task/{process.pid}/children").exists():
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        targets = [int(pid) for pid in children] or targets
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def _send_hl7(port: int) -> None:
    async with MllpClient("127.0.0.1", port) as client:
        for raw in hl7_messages():
            await client.send(raw, timeout=30)


async def _dump_topics(settings: KafkaSettings, wanted_decisions: int, timeout: float) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {topic: [] for topic in DECIDED_TOPICS}
    readers = {topic: await reader_of(settings, topic) for topic in DECIDED_TOPICS}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for topic, reader in readers.items():
                for records in (await reader.getmany(timeout_ms=200)).values():
                    for record in records:
                        value = json.loads(record.value)
                        value.pop("raw", None)  # a dead letter keeps the raw bytes by design: its metadata is checked
                        found[topic].append(value)
            if len(found[ROUTING_DECISIONS]) >= wanted_decisions:
                await asyncio.sleep(2)  # the audit events of the last decision
                for topic, reader in readers.items():
                    for records in (await reader.getmany(timeout_ms=500)).values():
                        found[topic] += [{k: v for k, v in json.loads(r.value).items() if k != "raw"} for r in records]
                break
    finally:
        for reader in readers.values():
            await reader.stop()
    return found


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return response.read().decode()
    except OSError as exc:
        return f"# unreachable: {exc}"


def _classify(port: int) -> int:
    body = json.dumps({"text": f"Discharge summary for {MARKERS[0]}, MRN {MARKERS[2]}.", "task_type": "auto"}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/classify", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status


def run(out: Path) -> dict:
    for sub in ("logs", "metrics", "strace", "home"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    in_namespace = subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True).returncode == 0
    dns = DnsWitness()
    if in_namespace:
        dns.start()
    broker = LocalBroker(data_dir=out / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    settings = KafkaSettings(bootstrap=broker.bootstrap, partitions=2)
    asyncio.run(ensure_topics(settings))
    ports = {name: free_port() for name in ("mllp", "dicom", "http", "m_mllp", "m_dicom", "m_worker")}
    base = {
        **os.environ,
        "PYTHONPATH": os.environ.get("OFFLINE_EXTRA_PATH", "") + ":" + str(REPO_ROOT),
        "MEDROUTE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "MEDROUTE_HOME": str(out / "home"),
        "MEDROUTE_MLLP_PORT": str(ports["mllp"]),
        "MEDROUTE_DICOM_PORT": str(ports["dicom"]),
        "MEDROUTE_HTTP_PORT": str(ports["http"]),
        "MEDROUTE_BLOB_KEY": "11" * 32,
        "MEDROUTE_WORKER_APP_ID": "offline-worker",
        "ENABLE_AUTH": "false",
    }
    children = {
        "listener-mllp": _spawn(
            "listener-mllp", "listeners.mllp", {**base, "MEDROUTE_METRICS_PORT": str(ports["m_mllp"])}, out
        ),
        "listener-dicom": _spawn(
            "listener-dicom", "listeners.dicom", {**base, "MEDROUTE_METRICS_PORT": str(ports["m_dicom"])}, out
        ),
        "worker": _spawn("worker", "pipeline", {**base, "MEDROUTE_WORKER_METRICS_PORT": str(ports["m_worker"])}, out),
        "web": _spawn("web", "web", base, out),
    }
    summary: dict = {"namespace": in_namespace, "markers": MARKERS}
    try:
        for name, port in (("listener-mllp", "mllp"), ("listener-dicom", "dicom"), ("web", "http")):
            wait_for_port(ports[port], 120, children[name])
        asyncio.run(_send_hl7(ports["mllp"]))
        summary["dicom_status"] = send_dicom([marked_image(out)], "127.0.0.1", ports["dicom"], "MEDROUTE", "PRIVSCU")
        summary["classify_status"] = _classify(ports["http"])
        topics = asyncio.run(_dump_topics(settings, wanted_decisions=3, timeout=150))
        summary["decisions"] = len(topics[ROUTING_DECISIONS])
        (out / "topics.json").write_text(json.dumps(topics, indent=1))
        for name in ("m_mllp", "m_dicom", "m_worker", "http"):
            (out / "metrics" / f"{name}.txt").write_text(_scrape(ports[name]))
    finally:
        for child in children.values():
            _stop(child)
        broker.stop()
    summary["dns_queries"] = sorted(set(dns.names))
    (out / "summary.json").write_text(json.dumps(summary))
    return summary


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1]))))
