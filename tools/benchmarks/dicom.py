"""C-STORE receive throughput of the DICOM listener against DCMTK's storescp, measured in the same run.

    python -m tools.benchmarks.dicom [--associations 1 8] [--small-images 800] [--ct-images 400]
                                [--listener-processes 2]

The same sender (DCMTK ``storescu``, ``TCP_NODELAY=1``, one process per association, each sending its
share of the files) sends the same kind of files to DCMTK ``storescp --fork`` (writing to a temporary
directory, no fsync) and to the medroute listener (blob encrypted and fsynced, record acknowledged by
Kafka before each success status). Every run sends freshly generated instances: the blob store keeps
one copy of identical bytes, so a resend would skip its write. Data: ``small`` is pydicom's CT_small
(39 KB); ``ct`` is 512x512 16-bit CT synthesized from it (0.53 MB). Starts its own Kafka broker (or
uses ``MEDROUTE_KAFKA_BOOTSTRAP``), warms it up, and prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from medroute import eventloop
from medroute.config import DICOM_INBOUND, KafkaSettings, child_environment
from medroute.kafka.client import reader_of
from medroute.kafka.topics import ensure_topics
from medroute.ports import free_port, wait_for_port
from shell.broker import LocalBroker
from tools.benchmarks.common import cpu_seconds, scratch_and_broker, warm_broker

CALLED = "MEDROUTE"


@dataclass
class Run:
    images: int
    megabytes: float
    seconds: float
    cpu_ms_per_image: dict[str, float]

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    @property
    def throughput(self) -> float:
        return self.megabytes / self.seconds


def _template(kind: str) -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    if kind == "ct":  # 128x128 -> 512x512, each pixel repeated 4x4: a CT-sized slice of real values
        pixels = np.kron(ds.pixel_array, np.ones((4, 4), dtype=ds.pixel_array.dtype))
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.tobytes()
    return ds


def write_instances(template: pydicom.Dataset, directory: Path, count: int) -> list[Path]:
    """``count`` new instances (fresh UIDs, so fresh bytes) of ``template`` in one new study."""
    directory.mkdir(parents=True)
    template.StudyInstanceUID = generate_uid()
    template.SeriesInstanceUID = generate_uid()
    paths = []
    for n in range(count):
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        template.InstanceNumber = n + 1
        path = directory / f"{n:05d}.dcm"
        template.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _cpu_with_ended_children(pid: int) -> float:
    """CPU seconds of ``pid``, its children, and its children that ended (storescp forks one per
    association): /proc's cutime/cstime count the waited-for ones."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return cpu_seconds(pid) + (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def send(port: int, files: list[Path], associations: int, cpu_of: dict[str, int]) -> Run:
    """``associations`` storescu processes in parallel, each one association with its share of files."""
    env = child_environment(TCP_NODELAY="1")
    before = {name: _cpu_with_ended_children(pid) for name, pid in cpu_of.items()}
    began = time.perf_counter()
    senders = [
        subprocess.Popen(
            ["storescu", "-aet", "BENCH", "-aec", CALLED, "127.0.0.1", str(port), *map(str, files[n::associations])],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for n in range(associations)
    ]
    failures = [s.stderr.read().decode(errors="replace")[-500:] for s in senders if s.wait() != 0]  # type: ignore[union-attr]
    elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"storescu failed: {failures[0]}")
    cpu = {name: (_cpu_with_ended_children(pid) - before[name]) * 1000 / len(files) for name, pid in cpu_of.items()}
    megabytes = sum(path.stat().st_size for path in files) / 1e6
    return Run(len(files), megabytes, elapsed, cpu)


async def _count_stored(settings: KafkaSettings, study_uids: set[str], expected: int, timeout: float = 60) -> int:
    """Records on dicom.inbound of the benchmark's studies: every success must have one."""
    reader = await reader_of(settings, DICOM_INBOUND)
    count, deadline = 0, time.monotonic() + timeout
    try:
        while count < expected and time.monotonic() < deadline:
            for batch in (await reader.getmany(timeout_ms=500)).values():
                count += sum(1 for r in batch if r.key and r.key.decode() in study_uids)
    finally:
        await reader.stop()
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--associations", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--small-images", type=int, default=800)
    parser.add_argument("--ct-images", type=int, default=400)
    parser.add_argument("--listener-processes", type=int, default=2, help="MEDROUTE_DICOM_PROCESSES")
    args = parser.parse_args(argv)
    if not shutil.which("storescu") or not shutil.which("storescp"):
        raise SystemExit("DCMTK's storescu and storescp are needed (apt-get install dcmtk)")

    with scratch_and_broker("medroute-bench-dicom-") as (work, broker, bootstrap):
        _measure(args, work, broker, bootstrap)
    return 0


def _measure(args: argparse.Namespace, work: Path, broker: LocalBroker | None, bootstrap: str) -> None:
    settings = KafkaSettings(bootstrap=bootstrap)
    asyncio.run(ensure_topics(settings))
    listener_port, scp_port = free_port(), free_port()
    env = child_environment(MEDROUTE_KAFKA_BOOTSTRAP=bootstrap, MEDROUTE_DICOM_PORT=str(listener_port),
                            MEDROUTE_DICOM_AE_TITLE=CALLED, MEDROUTE_HOME=str(work),
                            MEDROUTE_BLOB_DIR=str(work / "blobs"), MEDROUTE_LOG_LEVEL="WARNING",
                            MEDROUTE_DICOM_PROCESSES=str(args.listener_processes))
    listener = subprocess.Popen([sys.executable, "-m", "listeners.dicom"], env=env,
                                stdout=open(work / "listener.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    (work / "storescp").mkdir()
    storescp = subprocess.Popen(["storescp", "--fork", "-aet", CALLED, "-od", str(work / "storescp"), str(scp_port)],
                                env=child_environment(TCP_NODELAY="1"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        wait_for_port(listener_port, 60, listener)
        wait_for_port(scp_port, 30, storescp)
        eventloop.run(warm_broker(settings))
        templates = {"small": _template("small"), "ct": _template("ct")}
        warm = write_instances(templates["small"], work / "warm", 400)
        send(listener_port, warm, 8, {})  # the listener's own first associations, imports, producer
        cpu_of = {"listener": listener.pid, **({"broker": broker.pid()} if broker and broker.pid() else {})}
        rows = [
            "| data | image size | associations | images | storescp img/s | storescp MB/s | medroute img/s "
            "| medroute MB/s | ratio | CPU ms/img listener | broker | storescp |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        studies: set[str] = {str(pydicom.dcmread(warm[0], stop_before_pixels=True).StudyInstanceUID)}
        sent = len(warm)
        for kind, count in (("small", args.small_images), ("ct", args.ct_images)):
            for associations in args.associations:
                reference_files = write_instances(templates[kind], work / f"{kind}-{associations}-scp", count)
                files = write_instances(templates[kind], work / f"{kind}-{associations}-medroute", count)
                # Each receiver starts with no dirty pages of the bench's own writes (the files just
                # generated, the other receiver's output) left to be flushed under its fsyncs.
                os.sync()
                reference = send(scp_port, reference_files, associations, {"storescp": storescp.pid})
                shutil.rmtree(work / "storescp", ignore_errors=True)
                (work / "storescp").mkdir()
                os.sync()
                studies.add(str(templates[kind].StudyInstanceUID))
                measured = send(listener_port, files, associations, cpu_of)
                sent += count
                size_kb = reference_files[0].stat().st_size / 1024
                cpu = {**measured.cpu_ms_per_image, **reference.cpu_ms_per_image}
                cells = " | ".join(f"{cpu[n]:.2f}" if n in cpu else "-" for n in ("listener", "broker", "storescp"))
                rows.append(
                    f"| {kind} | {size_kb:,.0f} KB | {associations} | {count} | {reference.rate:,.0f} "
                    f"| {reference.throughput:,.1f} | {measured.rate:,.0f} | {measured.throughput:,.1f} "
                    f"| {measured.rate / reference.rate:.2f} | {cells} |"
                )
                print(rows[-1], flush=True)
        stored = eventloop.run(_count_stored(settings, studies, sent))
        print(
            f"\n# DICOM benchmark: {os.cpu_count()} CPUs, {args.listener_processes} listener process(es); "
            f"{stored} of {sent} images sent to medroute are on {DICOM_INBOUND}"
        )
        print("\n".join(rows))
        if stored < sent:
            raise SystemExit(f"only {stored} of {sent} acknowledged images are on {DICOM_INBOUND}")
    finally:
        for process in (listener, storescp):
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
