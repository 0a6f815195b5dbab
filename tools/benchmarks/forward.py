"""Forwarding throughput against direct sends to the same receiver, measured in the same run.

    python -m tools.benchmarks.forward [--messages 3000] [--images 200] [--backlog 5000]

Starts its own Kafka broker (or uses ``MEDROUTE_KAFKA_BOOTSTRAP``) and runs ``medroute forward`` as a child
process, as in production. Three measurements, each with its reference:

1. MLLP: the same messages sent directly with medroute's MLLP client over ``--connections`` connections from
   a child process of their own (as the forwarder is one), then forwarded from ``routing.decisions``
   (forwarder concurrency the same); the receiver is a minimal MLLP server in this process that answers AA,
   at once, and again (``--slow-messages``) after ``--ack-delay-ms``, as an EHR that commits first.
2. DICOM: a 0.5 MB CT image (pydicom-data ``693_UNCR.dcm``, renumbered) sent by DCMTK ``storescu`` to
   ``storescp --fork`` over 4 associations at once, then forwarded from the encrypted blob store over 4
   associations to the same storescp (each image a study of its own); and again as one study, which
   medroute delivers in order over one association, against ``storescu`` over one association.
3. Backlog: ``--backlog`` decisions for an MLLP receiver that is down; the time from the receiver coming back
   to the last message received.

Each forwarded run is the drain of a backlog: the forwarder is stopped while the run's records and decisions
are published, then started again. Rates are taken where the items arrive, over the time from the first item
received to the last, for the direct sends and the forwarded ones alike.

Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from formats.hl7.message import read_lenient
from formats.hl7.mllp import Frame, MllpDecoder, wrap
from formats.hl7.mllp_client import MllpClient
from formats.hl7.record import record_of_bytes
from medroute import eventloop
from medroute.blobstore import BlobStore
from medroute.config import KafkaSettings, child_environment
from medroute.kafka.topics import ensure_topics
from medroute.ports import free_port, wait_for_port
from medroute.records import DicomRecord, new_id
from pipeline.outcomes import Decided
from shell.samples import sample_messages
from tools.benchmarks.common import (
    ArrivalCpu,
    answer_each_frame,
    decided_item,
    publish_decided,
    quiet,
    scratch_and_broker,
    warm_broker,
)

BLOB_KEY = bytes(range(32))


# Processes whose CPU a forwarded run reports (the first match of each command line counts).
PROCESSES = {"direct sender": "--send-to", "receiver (MLLP, this process)": "tools.benchmarks.forward",
             "medroute forward's DICOM sender processes": "pipeline.forward.dicom_worker",
             "medroute forward": "pipeline.forward", "broker": "kafka.Kafka",
             "receiver (storescp)": "storescp"}  # fmt: skip


class Receiver:
    """A minimal MLLP receiver: counts messages, answers AA naming each MSH-10; with ``ack_delay`` (seconds)
    each answer waits that long, as an EHR that commits a message before it acknowledges it."""

    def __init__(self, ack_delay: float = 0.0) -> None:
        self.ack_delay = ack_delay
        self.count = 0
        self.first_at = self.last_at = 0.0
        self._cpu: tuple[ArrivalCpu, int, int] | None = None  # the meter, the first and the last count
        self.server: asyncio.Server | None = None
        self.port = free_port()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_each_frame(reader, writer, self._answer, self.ack_delay)

    def _answer(self, message: bytes) -> bytes:
        control = read_lenient(message.decode("latin-1")).header.control_id.encode()
        self.count += 1
        self.last_at = time.perf_counter()
        self.first_at = self.first_at or self.last_at
        if self._cpu is not None:
            cpu, first, last = self._cpu
            if self.count == first:
                cpu.first()
            if self.count == last:
                cpu.last()
        return wrap(b"MSH|^~\\&|R|R|S|S|20260101||ACK|A" + control + b"|P|2.5\rMSA|AA|" + control)

    async def wait_for(self, total: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.count < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"received {self.count} of {total}")
            await asyncio.sleep(0.01)

    async def span(self, arrivals: Awaitable[Any], count: int, cpu: ArrivalCpu) -> float:
        """Seconds from the first to the last of ``count`` messages that ``arrivals`` brings in; ``cpu``
        measures between the same two."""
        before, self.first_at = self.count, 0.0
        self._cpu = (cpu, before + 1, before + count)
        await arrivals
        await self.wait_for(before + count)
        self._cpu = None
        return self.last_at - self.first_at


def messages(count: int, prefix: str) -> list[bytes]:
    return [message.raw for message in sample_messages(count, prefix=prefix)]


async def direct(receiver: Receiver, payloads: list[bytes], connections: int, home: Path, cpu: ArrivalCpu) -> float:
    """The messages sent by a child process of their own (the forwarder is one too: a sender in this
    process would skip the context switches that every cross-process round trip costs)."""
    stream = home / "direct.mllp"
    stream.write_bytes(b"".join(wrap(payload) for payload in payloads))
    command = [sys.executable, "-m", "tools.benchmarks.forward", "--send-to", str(receiver.port),
               "--connections", str(connections), "--stream", str(stream)]  # fmt: skip
    child = await asyncio.create_subprocess_exec(*command, env=child_environment())
    return await receiver.span(child.wait(), len(payloads), cpu)


async def send_stream(port: int, stream: Path, connections: int) -> None:
    payloads = [e.payload for e in MllpDecoder().feed(stream.read_bytes()) if isinstance(e, Frame)]

    async def sender(share: list[bytes]) -> None:
        async with MllpClient("127.0.0.1", port) as client:
            for payload in share:
                await client.send(payload)

    await asyncio.gather(*(sender(payloads[n::connections]) for n in range(connections)))


def hl7_decisions(payloads: list[bytes], destination: str) -> list[Decided]:
    return [decided_item(record_of_bytes(raw), [destination]) for raw in payloads]


async def forwarded(
    kafka: KafkaSettings, receiver: Receiver, payloads: list[bytes], destination: str, forwarder: ForwarderProcess,
    cpu: ArrivalCpu | None = None,
) -> float:
    publish = publish_decided(kafka, hl7_decisions(payloads, destination))
    return await receiver.span(forwarder.drain(publish), len(payloads), cpu or ArrivalCpu({}))


class ForwarderProcess:
    """``medroute forward`` as a child process, as in production."""

    def __init__(self, kafka: KafkaSettings, home: Path, destinations: str) -> None:
        path = home / "destinations.yaml"
        path.write_text(destinations)
        self._env = child_environment(
            MEDROUTE_KAFKA_BOOTSTRAP=kafka.bootstrap_servers, MEDROUTE_HOME=str(home),
            MEDROUTE_DESTINATIONS=str(path), MEDROUTE_BLOB_DIR=str(home / "blobs"),
            MEDROUTE_BLOB_KEY=BLOB_KEY.hex(), MEDROUTE_LOG_LEVEL="WARNING",
        )  # fmt: skip
        self._log = home / "forward.log"
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self._log, "ab") as log:
            command = [sys.executable, "-m", "pipeline.forward"]
            self._process = subprocess.Popen(command, env=self._env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(60)
            self._process = None

    async def drain(self, publish: Awaitable[None]) -> None:
        """Publish with the forwarder stopped (publishing shares neither the receiver's event loop nor the
        run's time), then start it: the run is the drain of that backlog."""
        self.stop()
        await publish
        self.start()


def ct_files(directory: Path, count: int) -> list[Path]:
    ds = pydicom.dcmread(get_testdata_file("693_UNCR.dcm"))
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = directory / f"ct{n:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


class Arrivals(threading.Thread):
    """Watches ``directory`` while a run sends: ``cpu`` measures from its first file to its ``total``-th."""

    def __init__(self, directory: Path, total: int, cpu: ArrivalCpu, timeout: float = 600) -> None:
        super().__init__(daemon=True)
        self._directory, self._total, self._cpu = directory, total, cpu
        self._deadline = time.monotonic() + timeout
        self.start()

    def _count(self) -> int:
        return sum(1 for _ in os.scandir(self._directory))

    def run(self) -> None:
        while not self._count() and time.monotonic() < self._deadline:
            time.sleep(0.002)
        self._cpu.first()
        while self._count() < self._total and time.monotonic() < self._deadline:
            time.sleep(0.005)
        self._cpu.last()

    def span(self) -> float:
        """Once every file is there: the seconds from the first file written to the last."""
        self.join(max(0.0, self._deadline - time.monotonic()))
        if self.is_alive():
            raise TimeoutError(f"{self._count()} of {self._total} images arrived")
        time.sleep(0.5)  # the last file's last write
        written = [path.stat().st_mtime for path in self._directory.iterdir()]
        return max(written) - min(written)


def receivers_home(home: Path) -> Path:
    """Where both storescp receivers write: in memory (/dev/shm) where the host has it, so that neither side's
    rate depends on when the host's disk writeback happens to start (it had moved storescp's CPU per image
    from ~0.7 to ~2.5 ms between runs). The blob store and the broker stay on disk, as in service."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="medroute-bench-forward-", dir=shm))
    return home


def dcmtk_env() -> dict[str, str]:
    return child_environment(TCP_NODELAY="1")  # Debian's DCMTK leaves Nagle on without it


def storescp(directory: Path, port: int) -> subprocess.Popen:
    directory.mkdir(parents=True, exist_ok=True)
    command = ["storescp", "--fork", "--max-pdu", "131072", "-od", str(directory), "-aet", "STORESCP", str(port)]
    process = subprocess.Popen(command, env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, 30, process)
    return process


def dicom_direct(files: list[Path], port: int, out: Path, associations: int, cpu: ArrivalCpu) -> float:
    arrivals = Arrivals(out, len(files), cpu)
    senders = [
        subprocess.Popen(
            ["storescu", "-aet", "BENCH", "-aec", "STORESCP", "127.0.0.1", str(port), *map(str, files[n::associations])],  # noqa: E501
            env=dcmtk_env(),
        )
        for n in range(associations)
    ]
    for sender in senders:
        sender.wait()
    return arrivals.span()


async def dicom_forwarded(
    kafka: KafkaSettings, files: list[Path], blobs: BlobStore, out: Path, name: str, forwarder: ForwarderProcess,
    cpu: ArrivalCpu, one_study: bool = False,
) -> float:
    """``one_study``: every image of the same study, so delivered one after the other in order (one lane);
    else each image a study of its own, so the destination's 4 associations share them."""
    decisions = []
    study = generate_uid()
    for path in files:
        data = path.read_bytes()
        reference = blobs.put(data)
        blank = dict.fromkeys(("series_uid", "sop_instance_uid", "sop_class_uid", "body_part", "view_position",
                                "study_description", "series_description", "transfer_syntax", "calling_ae",
                                "called_ae", "peer"), "")  # fmt: skip
        record = DicomRecord(message_id=new_id(), study_uid=study if one_study else generate_uid(), modality="CT",
                             size=len(data),
                             blob=reference, **blank)  # fmt: skip
        decisions.append(decided_item(record, [name]))
    arrivals = Arrivals(out, len(files), cpu)
    await forwarder.drain(publish_decided(kafka, decisions))
    return await asyncio.to_thread(arrivals.span)


async def run(kafka: KafkaSettings, home: Path, args: argparse.Namespace) -> list[str]:
    await ensure_topics(kafka)
    await warm_broker(kafka)
    receiver, down, slow = Receiver(), Receiver(), Receiver(args.ack_delay_ms / 1000)
    await receiver.start()
    await slow.start()
    pacs_port = free_port()
    received = receivers_home(home)
    direct_dir, forward_dir = received / "scp-direct", received / "scp-forward"
    direct_port = free_port()
    scp_direct = storescp(direct_dir, direct_port)
    scp_forward = storescp(forward_dir, pacs_port)
    tag = os.urandom(3).hex()
    c = args.connections
    forwarder = ForwarderProcess(kafka, home, (
        "destinations:\n"
        f"  ehr-{tag}: {{type: mllp, host: 127.0.0.1, port: {receiver.port}, concurrency: {c}}}\n"
        f"  slow-{tag}: {{type: mllp, host: 127.0.0.1, port: {slow.port}, concurrency: {c}}}\n"
        f"  down-{tag}: {{type: mllp, host: 127.0.0.1, port: {down.port}, concurrency: {c},"
        " breaker: {failures: 2, open_seconds: 0.5, max_open_seconds: 1}}\n"
        f"  pacs-{tag}: {{type: dicom, host: 127.0.0.1, port: {pacs_port}, called_ae: STORESCP, concurrency: 4}}\n"
    ))  # fmt: skip
    rows: list[str] = []
    where: list[str] = []
    try:
        forwarder.start()
        # Everything has run once, and the broker has compiled its hot paths (as a broker in service has).
        await forwarded(kafka, receiver, messages(args.messages, "W"), f"ehr-{tag}", forwarder)
        await quiet({"broker": "kafka.Kafka"})
        n = args.messages
        cpu_ref, cpu_got = ArrivalCpu(PROCESSES), ArrivalCpu(PROCESSES)
        ref = await direct(receiver, messages(n, "D"), c, home, cpu_ref)
        got = await forwarded(kafka, receiver, messages(n, "F"), f"ehr-{tag}", forwarder, cpu_got)
        rows.append(_row("MLLP direct (medroute's client)", f"{c} connections", n, f"{n / ref:,.0f} msg/s", 1.0,
                         cpu_ref, 1000))  # fmt: skip
        rows.append(_row("**MLLP forwarded**", f"concurrency {c}", n, f"**{n / got:,.0f} msg/s**", ref / got,
                         cpu_got, 1000))  # fmt: skip
        where.append(_where("MLLP forwarded", cpu_got, n, 1000))
        n, delay = args.slow_messages, f"receiver answers after {args.ack_delay_ms:g} ms"
        ref = await direct(slow, messages(n, "DS"), c, home, ArrivalCpu({}))
        got = await forwarded(kafka, slow, messages(n, "FS"), f"slow-{tag}", forwarder)
        rows.append(_row(f"MLLP direct, {delay}", f"{c} connections", n, f"{n / ref:,.0f} msg/s", 1.0, None, 1))
        rows.append(_row(f"MLLP forwarded, {delay}", f"concurrency {c}", n, f"{n / got:,.0f} msg/s", ref / got,
                         None, 1))  # fmt: skip

        files = ct_files(home / "ct", args.images)
        blobs = BlobStore(home / "blobs", BLOB_KEY)
        warm = ct_files(home / "ct-warm", 8)
        await dicom_forwarded(kafka, warm, blobs, forward_dir, f"pacs-{tag}", forwarder, ArrivalCpu({}))
        n = args.images
        dicom_direct(files, direct_port, direct_dir, 4, ArrivalCpu({}))  # storescp's first run is the slowest
        for associations, one_study in ((4, False), (1, True)):
            for directory in (direct_dir, forward_dir):
                shutil.rmtree(directory)
                directory.mkdir()
            cpu_ref, cpu_got = ArrivalCpu(PROCESSES), ArrivalCpu(PROCESSES)
            ref = dicom_direct(files, direct_port, direct_dir, associations, cpu_ref)
            got = await dicom_forwarded(kafka, files, blobs, forward_dir, f"pacs-{tag}", forwarder, cpu_got,
                                        one_study)  # fmt: skip
            what = "one study, in order" if one_study else f"{associations} associations"
            rows.append(_row("DICOM direct: storescu -> storescp", f"{associations} association"
                             + "s" * (associations > 1), n, f"{n / ref:,.1f} img/s", 1.0, cpu_ref, 1))  # fmt: skip
            rows.append(_row("**DICOM forwarded** (blob store -> storescp)", what, n, f"**{n / got:,.1f} img/s**",
                             ref / got, cpu_got, 1))  # fmt: skip
            where.append(_where(f"DICOM forwarded, {what}", cpu_got, n, 1))

        await publish_decided(kafka, hl7_decisions(messages(args.backlog, "B"), f"down-{tag}"))
        await asyncio.sleep(3)  # the forwarder has read them and finds the receiver down
        await down.start()
        started = time.perf_counter()
        await down.wait_for(args.backlog)
        drained = time.perf_counter() - started
        n = args.backlog
        rows.append(_row("**backlog drain** (MLLP receiver back after an outage)", f"concurrency {c}", n,
                         f"**{drained:.1f} s** ({n / drained:,.0f} msg/s)", None, None, 1))  # fmt: skip
    finally:
        forwarder.stop()
        for process in (scp_direct, scp_forward):
            process.terminate()
        if received != home:
            shutil.rmtree(received, ignore_errors=True)
        for each in (receiver, down, slow):
            await each.stop()
    return [*rows, "", "CPU per item from the first arrival to the last, by process:", "", *where]


def _row(run: str, parallelism: str, items: int, rate: str, ratio: float | None, cpu: ArrivalCpu | None,
         scale: int) -> str:  # fmt: skip
    """``scale``: 1 for ms per item, 1000 for µs."""
    used = "-" if cpu is None else _cpu_figure(cpu.per_item_ms(items)["machine"], scale)
    return f"| {run} | {parallelism} | {items} | {rate} | {'-' if ratio is None else f'{ratio:.2f}'} | {used} |"


def _where(run: str, cpu: ArrivalCpu, items: int, scale: int) -> str:
    unit = "µs" if scale > 1 else "ms"
    shares = [f"{name} {_cpu_figure(value, scale)}" for name, value in cpu.per_item_ms(items).items()
              if name != "machine" and value > 0]  # fmt: skip
    return f"- {run}, {unit} per item: " + ", ".join(shares)


def _cpu_figure(milliseconds: float, scale: int) -> str:
    """Whole µs (``scale`` 1000), or ms with two decimals (``scale`` 1)."""
    return f"{milliseconds * scale:,.0f}" if scale > 1 else f"{milliseconds:,.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--ack-delay-ms", type=float, default=2.0, help="the slower receiver's time per ACK")
    parser.add_argument("--slow-messages", type=int, default=4000, help="messages sent to the slower receiver")
    parser.add_argument("--send-to", type=int, help=argparse.SUPPRESS)  # the direct sender's child process
    parser.add_argument("--stream", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.send_to:
        eventloop.run(send_stream(args.send_to, args.stream, args.connections))  # the loop medroute runs on
        return 0
    with scratch_and_broker("medroute-bench-forward-") as (home, _, bootstrap):
        rows = asyncio.run(run(KafkaSettings(bootstrap=bootstrap), home, args))
    print("| run | parallelism | items | rate | ratio to direct | CPU per item, whole machine (µs MLLP, ms DICOM) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
