"""The soak's system, traffic and schedule (see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE

from formats.hl7.mllp_client import MllpClient, parse_ack
from medroute.config import KafkaSettings
from medroute.kafka.topics import ensure_topics
from medroute.ports import free_port, wait_for_port
from shell.broker import LocalBroker
from tools import soak
from tools.benchmarks.common import Child, MessageSource, terminate_on_sigterm
from tools.soak.checks import EHR, PACS, WORKER_GROUP, Traffic, check, passed
from tools.soak.receivers import DicomReceiver, MllpReceiver

TARGETS = ("mllp", "dicom", "worker-1", "worker-2", "forwarder", "broker")
MODULES = {"mllp": "listeners.mllp", "dicom": "listeners.dicom", "forwarder": "pipeline.forward"}
ROUTES = """rules:
  - name: images
    kind: dicom
    destinations: [pacs]
  - name: messages
    destinations: [ehr]
"""
# Patient retries: the receivers never refuse, so a dead letter here would be a fault of the soak's system
# (attempts count only tries that reached the receiver; a broker kill can fail a few item reads).
DESTINATIONS = """destinations:
  ehr:
    type: mllp
    host: 127.0.0.1
    port: {ehr}
    timeout: 10
    attempts: 100
    backoff: {{initial: 0.2, maximum: 2}}
    breaker: {{failures: 10, open_seconds: 1, max_open_seconds: 5}}
  pacs:
    type: dicom
    host: 127.0.0.1
    port: {pacs}
    called_ae: SOAKPACS
    timeout: 10
    attempts: 100
    backoff: {{initial: 0.2, maximum: 2}}
    breaker: {{failures: 10, open_seconds: 1, max_open_seconds: 5}}
"""


class System:
    """The broker and the processes under test, each of which can be killed and restarted."""

    def __init__(self, home: Path, debug_workers: bool = False) -> None:
        self.home = home
        self.debug_workers = debug_workers
        self.broker = LocalBroker(data_dir=home / "kafka", port=free_port(), controller_port=free_port())
        self.ports = {"mllp": free_port(), "dicom": free_port(), EHR: free_port(), PACS: free_port()}
        self.children: dict[str, Child] = {}
        (home / "routes.yaml").write_text(ROUTES)
        (home / "destinations.yaml").write_text(DESTINATIONS.format(ehr=self.ports[EHR], pacs=self.ports[PACS]))

    def env(self) -> dict[str, str]:
        return {
            "MEDROUTE_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "MEDROUTE_HOME": str(self.home),
            "MEDROUTE_MLLP_PORT": str(self.ports["mllp"]),
            "MEDROUTE_DICOM_PORT": str(self.ports["dicom"]),
            "MEDROUTE_BLOB_KEY": "22" * 32,
            "MEDROUTE_BLOB_DIR": str(self.home / "blobs"),  # one store for the listener, workers and forwarder
            "MEDROUTE_WORKER_APP_ID": WORKER_GROUP,
            "MEDROUTE_ROUTES": str(self.home / "routes.yaml"),
            "MEDROUTE_DESTINATIONS": str(self.home / "destinations.yaml"),
        }

    def start(self, name: str) -> None:
        if name == "broker":
            self.broker.start()
            return
        env = self.env()
        if name.startswith("worker"):
            env["MEDROUTE_HOME"] = str(self.home / name)  # each worker's table store of its own
            if self.debug_workers:  # DEVLOG: Faust's own developer lines too (offsets committed, messages dropped)
                env |= {"MEDROUTE_LOG_LEVEL": "DEBUG", "MEDROUTE_WORKER_FAUST_LOG_LEVEL": "DEBUG", "DEVLOG": "1"}
        self.children[name] = Child.python(MODULES.get(name, "pipeline"), env, self.home / f"{name}.log")
        if name in ("mllp", "dicom"):
            wait_for_port(self.ports[name], 60, self.children[name].process)

    def kill(self, name: str) -> None:
        if name == "broker":
            self.broker.kill()
        else:
            self.children[name].process.kill()
            self.children[name].process.wait()

    def stop(self) -> None:
        for child in self.children.values():
            child.stop(timeout=20)
        self.broker.stop()


async def send_hl7(port: int, stop: threading.Event, acked: list[str], rate: float) -> None:
    """One message at a time, each resent until AA, as an EHR's outbound queue does."""
    source = MessageSource(pool=200)
    n = 0
    while not stop.is_set():
        control_id = f"SOAK{n:07d}"
        raw = source.message(n, control_id)
        while not stop.is_set():
            try:
                async with MllpClient("127.0.0.1", port) as client:
                    if parse_ack(await client.send(raw, timeout=15)).code == "AA":
                        acked.append(control_id)
                        break
            except (TimeoutError, OSError, ConnectionError, ValueError):
                pass
            await asyncio.sleep(0.5)
        n += 1
        await asyncio.sleep(1 / rate)


def send_dicom(port: int, stop: threading.Event, stored: list[str], rate: float) -> None:
    """One image at a time with a new SOP Instance UID, resent until status 0x0000."""
    template = dcmread(get_testdata_file("CT_small.dcm"))
    ae = AE(ae_title="SOAKSCU")
    ae.add_requested_context(template.SOPClassUID, template.file_meta.TransferSyntaxUID)
    while not stop.is_set():
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        while not stop.is_set():
            association = ae.associate("127.0.0.1", port, ae_title="MEDROUTE")
            if association.is_established:
                status = association.send_c_store(template)
                association.release()
                if getattr(status, "Status", None) == 0x0000:
                    stored.append(str(template.SOPInstanceUID))
                    break
            time.sleep(0.5)
        time.sleep(1 / rate)


def run(minutes: float, interval: float, home: Path, debug_workers: bool = False, drain: float = 180,
        strict_doubles: bool = False, targets: tuple[str, ...] = TARGETS) -> dict:  # fmt: skip
    """Traffic for ``minutes`` while ``targets`` are killed in turn every ``interval`` s; the summary."""
    system = System(home, debug_workers)
    ehr = MllpReceiver(system.ports[EHR]).start()
    pacs = DicomReceiver(system.ports[PACS]).start()
    system.start("broker")
    settings = KafkaSettings(bootstrap=system.broker.bootstrap, partitions=4)
    asyncio.run(ensure_topics(settings))
    for name in TARGETS[:-1]:
        system.start(name)
    stop = threading.Event()
    acked: list[str] = []
    stored: list[str] = []
    forwarder_restarts: list[float] = []
    senders = [
        threading.Thread(target=lambda: asyncio.run(send_hl7(system.ports["mllp"], stop, acked, 10)), daemon=True),
        threading.Thread(target=send_dicom, args=(system.ports["dicom"], stop, stored, 2), daemon=True),
    ]
    kills: list[dict] = []
    began = time.monotonic()
    try:
        for sender in senders:
            sender.start()
        end = began + minutes * 60
        turn = 0
        while time.monotonic() + interval < end:
            time.sleep(interval)
            target = targets[turn % len(targets)]
            kills.append({"target": target, "at_s": round(time.monotonic() - began)})
            system.kill(target)
            time.sleep(2)
            if target == "forwarder":
                forwarder_restarts.append(time.monotonic())
            system.start(target)
            turn += 1
        time.sleep(max(0.0, end - time.monotonic()))
        stop.set()
        for sender in senders:
            sender.join(60)

        def traffic() -> Traffic:
            return Traffic(acked, stored, ehr.receipts.snapshot(), pacs.receipts.snapshot(), forwarder_restarts)

        summary = asyncio.run(check(settings, traffic, drain))
    finally:
        stop.set()
        system.stop()
        ehr.stop()
        pacs.stop()
    summary["kills"] = kills
    summary["seconds"] = round(time.monotonic() - began)
    # Records decided twice are counted, not failed: a worker killed between publishing a batch's decisions
    # and storing their ledger entries publishes them again, by design (pipeline/agents.py); the forwarders'
    # delivered-ids ledger delivers such a decision once, which the destination counts check.
    summary["ok"] = passed(summary, strict_doubles)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.soak", description=(soak.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=20.0, help="seconds between kills")
    parser.add_argument("--drain", type=float, default=180.0, help="seconds allowed to settle after the traffic")
    parser.add_argument("--home", help="where the broker data and logs go (default: a temporary directory)")
    parser.add_argument("--debug-workers", action="store_true", help="the workers log at DEBUG, Faust's too")
    parser.add_argument("--strict-doubles", action="store_true",
                        help="fail on items received twice across a forwarder restart too")  # fmt: skip
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"what is killed, in turn (default: {','.join(TARGETS)})")  # fmt: skip
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    if not targets or set(targets) - set(TARGETS):
        parser.error(f"--targets: a comma-separated choice of {', '.join(TARGETS)}")
    terminate_on_sigterm()
    home = Path(args.home or tempfile.mkdtemp(prefix="medroute-soak-"))
    home.mkdir(parents=True, exist_ok=True)
    summary = run(args.minutes, args.interval, home, args.debug_workers, args.drain, args.strict_doubles, targets)
    summary["home"] = str(home)
    print(json.dumps(summary, indent=1))
    return 0 if summary["ok"] else 1
