"""What the benchmarks share: CPU accounting, child processes, raw Kafka sends, unique sample messages.

Nothing here measures anything by itself; each benchmark module keeps its own runs and tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from formats.hl7.message import read_lenient
from formats.hl7.mllp import Frame, MllpDecoder
from medroute.config import DICOM_INBOUND, HL7_INBOUND, REPO_ROOT, ROUTING_DECISIONS, KafkaSettings, child_environment
from medroute.kafka.client import durable_producer
from medroute.records import DicomRecord, Hl7Record, RoutingDecision
from pipeline.dicom_feed import order_key as dicom_order_key
from pipeline.hl7_feed import order_key as hl7_order_key
from pipeline.outcomes import Decided
from pipeline.publish import forwardable
from shell.broker import LocalBroker, broker_unless_configured
from shell.samples import sample_messages

# The broker's JVM needs some 20,000 requests before its hot paths are compiled (its send rate
# triples over that span): measure only after that.
BROKER_WARM_UP_SENDS = 20_000


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by a process and its live children (Linux /proc)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    pids.append(int(entry.name))
            except (OSError, IndexError):  # a process that ended meanwhile
                continue
    total = 0
    for each in pids:
        with contextlib.suppress(OSError):
            fields = _stat(each)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of named processes (and of this one, as ``bench``) between :meth:`start` and :meth:`read`."""

    def __init__(self, processes: dict[str, int]) -> None:
        self.processes = processes
        self._before: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self.processes.items()}
        now["bench"] = time.process_time()
        return now

    def start(self) -> CpuMeter:
        self._before = self._now()
        return self

    def read(self) -> dict[str, float]:
        return {name: value - self._before[name] for name, value in self._now().items()}


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent outside idle and I/O wait so far, all cores (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def seconds_by_command(names: dict[str, str]) -> dict[str, float]:
    """CPU seconds so far of every process whose command line contains one of ``names``' values (its own
    and that of the children it has reaped), summed under the matching key; the first match counts."""
    totals = dict.fromkeys(names, 0.0)
    for entry in Path("/proc").iterdir() if names else ():  # nothing named: no scan in the middle of a run
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = _stat(int(entry.name))
        except (OSError, IndexError):  # ended meanwhile
            continue
        for key, needle in names.items():
            if needle in command:
                totals[key] += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
                break
    return totals


async def quiet(names: dict[str, str], below: float = 0.1, seconds: int = 3, limit: float = 120.0) -> float:
    """Wait until the processes named (see :func:`seconds_by_command`) have used under ``below`` of a core
    in each of ``seconds`` seconds running, or ``limit`` seconds have passed; returns the seconds waited.
    A broker started for a benchmark compiles its hot paths for a minute or more after its first requests,
    taking up to a core meanwhile; a broker in service has long done so."""
    started = time.monotonic()
    calm, before = 0, sum(seconds_by_command(names).values())
    while calm < seconds and time.monotonic() - started < limit:
        await asyncio.sleep(1.0)
        now = sum(seconds_by_command(names).values())
        calm, before = (calm + 1 if now - before < below else 0), now
    return time.monotonic() - started


class ArrivalCpu:
    """The CPU a run uses between its first and its last arrival (start-up left out, as from the rates):
    the whole machine's, and that of the processes named (see :func:`seconds_by_command`)."""

    def __init__(self, names: dict[str, str]) -> None:
        self._names = names
        self._first: tuple[float, dict[str, float]] | None = None
        self.used: dict[str, float] = {}

    def first(self) -> None:
        self._first = (busy_seconds(), seconds_by_command(self._names))

    def last(self) -> None:
        assert self._first is not None, "first() at the first arrival"
        machine, processes = self._first
        now = seconds_by_command(self._names)
        self.used = {"machine": busy_seconds() - machine, **{k: now[k] - processes[k] for k in self._names}}

    def per_item_ms(self, items: int) -> dict[str, float]:
        return {name: seconds * 1000 / items for name, seconds in self.used.items()}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by rank, as every benchmark table reports it; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Child:
    """A child process in its own session: Ctrl-C reaches only the benchmark, which stops the child's
    whole process group (listener siblings included) with SIGTERM, then SIGKILL after ``timeout``."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    @classmethod
    def python(cls, module: str, env: dict[str, str], log_path: Path) -> Child:
        """``python -m module`` with this interpreter and the repository on the path."""
        return cls([sys.executable, "-m", module], child_environment(**env, PYTHONPATH=str(REPO_ROOT)), log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the child and everything it started; returns its exit status."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # a sibling that outlived its parent
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def terminate_on_sigterm() -> None:
    """Make SIGTERM (e.g. from ``timeout``) act as Ctrl-C: the running event loop's main task is cancelled
    (or KeyboardInterrupt raised outside one), so ``finally`` blocks stop the children and the broker."""
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background by a shell script
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def scratch_and_broker(prefix: str) -> Iterator[tuple[Path, LocalBroker | None, str]]:
    """A scratch directory for one benchmark run and the Kafka it measures against (``broker_unless_configured``:
    a local broker in that directory unless ``MEDROUTE_KAFKA_BOOTSTRAP`` names one); yields (directory, the local
    broker or None, bootstrap). At the end the broker is stopped and the directory removed."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    broker = None
    try:
        broker, bootstrap = broker_unless_configured(work / "kafka")
        yield work, broker, bootstrap
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)


async def raw_send_and_wait(
    settings: KafkaSettings, payloads: Sequence[bytes], connections: int, topic: str = HL7_INBOUND
) -> tuple[float, list[float]]:
    """``payloads`` sent with ``send_and_wait`` by ``connections`` concurrent senders on one idempotent
    ``acks=all`` producer; returns (seconds, per-send latencies in ms)."""
    producer = durable_producer(settings)
    await producer.start()
    latencies: list[float] = []

    async def sender(share: Sequence[bytes]) -> None:
        for n, payload in enumerate(share):
            began = time.perf_counter()
            await producer.send_and_wait(topic, payload, key=str(n % 40).encode())
            latencies.append((time.perf_counter() - began) * 1000)

    try:
        began = time.perf_counter()
        await asyncio.gather(*(sender(payloads[i::connections]) for i in range(connections)))
        return time.perf_counter() - began, latencies
    finally:
        await producer.stop()


async def warm_broker(settings: KafkaSettings, record_size: int = 1500, topic: str = HL7_INBOUND) -> None:
    """Warm the broker's JVM (see :data:`BROKER_WARM_UP_SENDS`) with records of about ``record_size``."""
    await raw_send_and_wait(settings, [b"x" * record_size] * BROKER_WARM_UP_SENDS, 16, topic)


class MessageSource:
    """Sample HL7 messages (:func:`shell.samples.sample_messages`) made unique cheaply, for runs of any length.

    A pool of templates is generated once; :meth:`message` substitutes a fresh control id for the template's
    (MSH-10, and OBR-2 where the sample has one). With ``vary_texts`` every message with a report also gets
    an NTE line naming its control id, so no two report texts are equal: the samples have only a handful of
    distinct reports, which the classifier's cache (and its de-duplication within a batch) would otherwise
    answer without running the model, unlike real traffic.
    """

    def __init__(self, pool: int = 500, seed: int = 11, vary_texts: bool = True) -> None:
        self.templates: list[tuple[bytes, bytes]] = []
        for sample in sample_messages(pool, seed=seed, prefix="T"):
            raw, control_id = sample.raw, sample.control_id.encode()
            if vary_texts and sample.has_text:
                raw = with_note(raw, b"Reference " + control_id + b".")
            self.templates.append((raw, control_id))

    def message(self, n: int, control_id: str) -> bytes:
        """The ``n``-th message of the cycle, with ``control_id`` (ASCII, no HL7 delimiters)."""
        raw, template_id = self.templates[n % len(self.templates)]
        return raw.replace(template_id, control_id.encode())


def with_note(raw: bytes, text: bytes) -> bytes:
    """``raw`` with an NTE segment carrying ``text`` (ASCII, no delimiters) after its last segment,
    written with the message's own field separator and segment ending."""
    field = raw[3:4]
    ending = b"\r\n" if raw.endswith(b"\r\n") else raw[-1:]
    return raw + b"NTE" + field + b"1" + field + b"L" + field + text + ending


def _strict(value: Any) -> Any:
    """``value`` with NaN (a percentile of nothing) as null: strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    return value


def write_json(path: str | None, figures: dict[str, Any]) -> None:
    """Write a benchmark's figures to ``path`` (``--json``), when one is given."""
    if path:
        text = json.dumps(_strict(figures), indent=2, sort_keys=True, allow_nan=False)
        Path(path).write_text(text + "\n", encoding="utf-8")
        print(f"\nfigures written to {path}")


async def publish_decided(kafka: KafkaSettings, decided: Sequence[Decided]) -> None:
    """Store each item's inbound record, then its decision as the worker publishes it (keyed by its order
    key, pointing at the record): what a forwarder reads, without running a listener and a worker."""
    producer = durable_producer(kafka, linger_ms=5)
    await producer.start()
    try:
        inbound = [
            await producer.send(
                HL7_INBOUND if isinstance(item.record, Hl7Record) else DICOM_INBOUND,
                item.record.to_json(),
                key=(item.order_key or item.message_id).encode(),
            )
            for item in decided
        ]
        places = [f"{meta.topic}:{meta.partition}:{meta.offset}" for meta in await asyncio.gather(*inbound)]
        sends = []
        for item, place in zip(decided, places, strict=True):
            decision = forwardable(item, place)
            sends.append(await producer.send(ROUTING_DECISIONS, decision.to_json(), key=decision.order_key.encode()))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def decided_item(record: Hl7Record | DicomRecord, destinations: list[str], rule: str = "bench") -> Decided:
    """A metadata-only decision of ``record`` for ``destinations``, ordered as the worker orders it."""
    if isinstance(record, DicomRecord):
        kind, message_type, key = "dicom", f"DICOM^{record.modality}", dicom_order_key(record)
    else:
        kind, message_type = "hl7", record.message_type
        key = hl7_order_key(record, read_lenient(record.text()).patient_id)
    decision = RoutingDecision(record.message_id, kind, message_type, None, None, None, rule, destinations)
    return Decided(record, None, decision, None, key)


async def answer_each_frame(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    answer: Callable[[bytes], bytes],
    delay: float = 0.0,
) -> None:
    """A minimal MLLP receiver's connection (benchmarks, soak): each framed message gets ``answer(message)``,
    an already framed ACK, ``delay`` seconds after it came (an EHR that commits before it acknowledges),
    until the sender closes."""
    decoder = MllpDecoder()
    try:
        while data := await reader.read(65536):
            for event in decoder.feed(data):
                if isinstance(event, Frame):
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(answer(event.payload))
            await writer.drain()
    except (ConnectionError, IndexError):  # IndexError: an answer could not read a message's MSH-10
        pass
    except asyncio.CancelledError:
        # The run is over (its event loop cancels the connections left open): end quietly, or Python 3.11's
        # stream callback prints each connection's CancelledError as an error.
        pass
    finally:
        writer.close()
