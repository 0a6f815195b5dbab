"""End to end on this machine: MLLP sender -> listener -> Kafka -> worker -> decision, against the listener alone.

    python -m tools.benchmarks.pipeline [--duration 60] [--throughput-rate R] [--reference-duration 20]
                                        [--connections 16] [--rate 200] [--latency-duration 30]
                                        [--listener-processes 1] [--batch-size 64] [--batch-ms 20]
                                        [--model doctype-en] [--json PATH]

Starts its own Kafka broker (or uses ``MEDROUTE_KAFKA_BOOTSTRAP``), creates the topics, warms the broker's
JVM, and starts the MLLP listener (``MEDROUTE_MLLP_PROCESSES``) as a child process. Then:

1. reference, the listener alone (no worker running): ``--connections`` senders, each waiting for its ACK,
   for ``--reference-duration`` seconds: the ingest ceiling (MLLP -> Kafka, commit before ACK);
2. the worker (``python -m pipeline``, ``MEDROUTE_BATCH_SIZE``/``MEDROUTE_BATCH_MS``) starts under a fresh
   ``MEDROUTE_WORKER_APP_ID``, its group's offsets committed at the end of the inbound topics first (a
   fresh group would otherwise start from the earliest records: the warm-up and the reference); warm-up
   messages are sent and their decisions awaited, so the worker is known to be serving;
3. phase A, throughput: the same senders for ``--duration`` seconds while ``routing.decisions`` is followed;
   messages ACKed/s, decisions/s for the window's messages (those decided within the window, and all of
   them over the time to the last one, once all arrived or ``--drain-timeout`` passed), the backlog
   (ACKed, not yet decided) at the window's end and at the end, CPU seconds per process;
4. phase B, latency: sending paced at ``--rate`` msg/s for ``--latency-duration`` seconds; per message, from
   just before its send to its decision's arrival here: p50/p95/p99/max.

Sample messages get fresh control ids and distinct report texts (see ``MessageSource``;
``--repeated-texts`` keeps the samples' few reports, which the worker's classifier cache then answers).
``MEDROUTE_IMAGE_MODEL`` defaults to ``none`` here (only HL7 is sent). All children are stopped at the
end, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medroute import eventloop
from medroute.config import DICOM_INBOUND, HL7_INBOUND, KafkaSettings
from medroute.kafka.client import consumer, topic_partitions
from medroute.kafka.topics import ensure_topics
from medroute.ports import free_port, wait_for_port
from pipeline.settings import IMAGE_MODEL
from shell.broker import LocalBroker, broker_unless_configured
from tools.benchmarks.common import (
    Child,
    CpuMeter,
    MessageSource,
    percentile,
    terminate_on_sigterm,
    warm_broker,
    write_json,
)
from tools.benchmarks.flow import DecisionFollower, SendLog, send_for

FLOOR_RATE = 800.0  # decisions/s sustained over a 60 s window
FLOOR_WINDOW = 60.0
FLOOR_P99_MS = 250.0  # at 200 msg/s


@dataclass
class Processes:
    listener: Child
    broker_pid: int | None
    worker: Child | None = None

    def pids(self) -> dict[str, int]:
        pids = {"listener": self.listener.pid}
        if self.worker is not None:
            pids["worker"] = self.worker.pid
        if self.broker_pid is not None:
            pids["broker"] = self.broker_pid
        return pids

    def worker_alive(self) -> bool:
        return self.worker is not None and self.worker.process.poll() is None


async def start_group_at_end(settings: KafkaSettings, group: str, topics: tuple[str, ...]) -> None:
    """Commit ``group``'s offsets at the current end of ``topics``: its first member starts there."""
    partitions = [tp for topic in topics for tp in await topic_partitions(settings, topic)]
    # A broker's first group creates __consumer_offsets: aiokafka logs "coordinator not available" as an
    # error, then retries. The check below is what tells whether the commit took.
    coordinator_log = logging.getLogger("aiokafka.consumer.group_coordinator")
    level = coordinator_log.level
    coordinator_log.setLevel(logging.CRITICAL)
    committer = consumer(settings, group_id=group)
    try:
        await committer.start()
        committer.assign(partitions)
        await committer.seek_to_end(*partitions)
        offsets = {tp: await committer.position(tp) for tp in partitions}
        await committer.commit(offsets)
        for tp, offset in offsets.items():
            if await committer.committed(tp) != offset:
                raise RuntimeError(f"group {group!r}: offset {offset} of {tp} not committed")
    finally:
        coordinator_log.setLevel(level)
        await committer.stop()


def ack_rate(log: SendLog, began: float) -> float:
    return len(log.acked) / (max(log.acked.values()) - began) if log.acked else 0.0


async def reference(port: int, source: MessageSource, args: argparse.Namespace, procs: Processes) -> dict[str, Any]:
    meter = CpuMeter(procs.pids()).start()
    began = time.perf_counter()
    log = await send_for(port, source, f"R{args.tag}-", args.connections, args.reference_duration)
    return {"seconds": args.reference_duration, "acked": len(log.acked), "acked_per_s": ack_rate(log, began),
            "ack_p99_ms": percentile(log.ack_latencies_ms(), 0.99), "cpu_seconds": meter.read()}  # fmt: skip


async def throughput(
    port: int, source: MessageSource, args: argparse.Namespace, procs: Processes, follower: DecisionFollower
) -> dict[str, Any]:
    meter = CpuMeter(procs.pids()).start()
    began = time.perf_counter()
    log = await send_for(port, source, f"A{args.tag}-", args.connections, args.duration, rate=args.throughput_rate)
    window_end = began + args.duration
    acked_in_window, decided_in_window = log.acked_by(window_end), follower.count(log.acked, by=window_end)
    drained = await follower.wait_for(log.acked, args.drain_timeout, procs.worker_alive)
    decided, last = follower.count(log.acked), follower.last(log.acked)
    return {
        "seconds": args.duration, "acked": len(log.acked), "acked_per_s": ack_rate(log, began),
        "ack_p99_ms": percentile(log.ack_latencies_ms(), 0.99),
        "decided": decided, "decided_in_window": decided_in_window,
        "decisions_per_s_window": decided_in_window / args.duration,
        "decisions_per_s": decided / (last - began) if last else 0.0,
        "backlog_at_window_end": acked_in_window - decided_in_window, "backlog_at_end": len(log.acked) - decided,
        "drained": drained, "duplicates": follower.duplicates, "cpu_seconds": meter.read(),
    }  # fmt: skip


async def latency(
    port: int, source: MessageSource, args: argparse.Namespace, procs: Processes, follower: DecisionFollower
) -> dict[str, Any]:
    meter = CpuMeter(procs.pids()).start()
    log = await send_for(port, source, f"L{args.tag}-", args.connections, args.latency_duration, rate=args.rate)
    await follower.wait_for(log.acked, args.drain_timeout, procs.worker_alive)
    ms = [(follower.decided[cid] - log.began[cid]) * 1000 for cid in log.acked if cid in follower.decided]
    acks = log.ack_latencies_ms()
    return {
        "rate": args.rate, "seconds": args.latency_duration, "sent": len(log.acked), "decided": len(ms),
        "ack_p50_ms": percentile(acks, 0.5), "ack_p99_ms": percentile(acks, 0.99),
        **{f"p{q}_ms": percentile(ms, q / 100) for q in (50, 95, 99)}, "max_ms": max(ms, default=float("nan")),
        "cpu_seconds": meter.read(),
    }  # fmt: skip


async def start_worker(
    settings: KafkaSettings, port: int, source: MessageSource, args: argparse.Namespace, procs: Processes,
    follower: DecisionFollower, env: dict[str, str], work: Path,
) -> None:  # fmt: skip
    """The worker under a fresh app id, known to serve once its warm-up messages are decided."""
    app_id = f"medroute-bench-{args.tag}"
    await start_group_at_end(settings, app_id, (HL7_INBOUND, DICOM_INBOUND))
    procs.worker = Child.python("pipeline", {**env, "MEDROUTE_WORKER_APP_ID": app_id,
                                             "MEDROUTE_BATCH_SIZE": str(args.batch_size),
                                             "MEDROUTE_BATCH_MS": str(args.batch_ms),
                                             "MEDROUTE_TEXT_MODEL": args.model,
                                             "MEDROUTE_IMAGE_MODEL": IMAGE_MODEL() or "none"},
                                work / "worker.log")  # fmt: skip
    log = await send_for(port, source, f"W{args.tag}-", 4, args.warmup_seconds, rate=args.rate)
    if not await follower.wait_for(log.acked, args.start_timeout, procs.worker_alive):
        raise RuntimeError(
            f"the worker decided {follower.count(log.acked)} of {len(log.acked)} warm-up messages within "
            f"{args.start_timeout:.0f} s; its log ends:\n{procs.worker.log_tail()}"
        )


async def run(settings: KafkaSettings, port: int, args: argparse.Namespace, procs: Processes,
              env: dict[str, str], work: Path) -> dict[str, Any]:  # fmt: skip
    source = MessageSource(seed=11, vary_texts=not args.repeated_texts)
    await warm_broker(settings)
    await send_for(port, source, f"X{args.tag}-", args.connections, args.warmup_seconds)  # the listener's warm-up
    figures: dict[str, Any] = {"load_average": os.getloadavg()[0]}
    figures["reference"] = await reference(port, source, args, procs)
    follower = DecisionFollower(settings)
    await follower.start()
    try:
        await start_worker(settings, port, source, args, procs, follower, env, work)
        figures["throughput"] = await throughput(port, source, args, procs, follower)
        figures["latency"] = await latency(port, source, args, procs, follower)
    finally:
        await follower.stop()
    return figures


def _cpu(cells: dict[str, float]) -> str:
    names = ("listener", "worker", "broker", "bench")
    return " | ".join(f"{cells[name]:.1f}" if name in cells else "-" for name in names)


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    ref, a, b = figures["reference"], figures["throughput"], figures["latency"]
    ratio = a["decisions_per_s_window"] / ref["acked_per_s"] if ref["acked_per_s"] else float("nan")
    print(f"# pipeline benchmark: {os.cpu_count()} CPUs (load average {figures['load_average']:.1f} before), "
          f"{args.listener_processes} listener process(es), worker batch {args.batch_size} / {args.batch_ms} ms, "
          f"model {args.model}, {args.connections} connections, phase A offered "
          f"{f'{args.throughput_rate:,.0f} msg/s' if args.throughput_rate else 'as fast as ACKs come'}, texts "
          f"{'repeated' if args.repeated_texts else 'varied'}")  # fmt: skip
    print("| run | seconds | ACKed | ACKed/s | ACK p99 ms | decided | decisions/s in window | decisions/s to last "
          "| ratio (in window) to listener alone | backlog at window end | backlog at end | CPU s listener "
          "| worker | broker | bench |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    print(f"| listener alone (reference) | {ref['seconds']:.0f} | {ref['acked']} | {ref['acked_per_s']:,.0f} "
          f"| {ref['ack_p99_ms']:.1f} | - | - | - | 1.00 | - | - | {_cpu(ref['cpu_seconds'])} |")  # fmt: skip
    print(f"| end to end | {a['seconds']:.0f} | {a['acked']} | {a['acked_per_s']:,.0f} | {a['ack_p99_ms']:.1f} "
          f"| {a['decided']} | {a['decisions_per_s_window']:,.0f} | {a['decisions_per_s']:,.0f} | {ratio:.2f} "
          f"| {a['backlog_at_window_end']} | {a['backlog_at_end']} | {_cpu(a['cpu_seconds'])} |")  # fmt: skip
    met = a["decisions_per_s_window"] >= FLOOR_RATE and a["backlog_at_end"] == 0
    short = "" if a["seconds"] >= FLOOR_WINDOW else f" (window {a['seconds']:.0f} s < {FLOOR_WINDOW:.0f} s: indicative)"
    print(f"\nFloor ≥ {FLOOR_RATE:,.0f} msg/s decided, sustained for {FLOOR_WINDOW:.0f} s: "
          f"{'met' if met else 'NOT met'} ({a['decisions_per_s_window']:,.0f}/s in the window){short}")  # fmt: skip
    if not a["drained"]:
        print(f"({a['backlog_at_end']} messages still undecided after --drain-timeout {args.drain_timeout:.0f} s: "
              "phase B started behind that backlog)")  # fmt: skip
    print("\n| run | seconds | sent | decided | ACK p50 ms | ACK p99 ms | p50 ms | p95 ms | p99 ms | max ms "
          "| CPU s listener | worker | broker | bench |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| paced {b['rate']:.0f}/s | {b['seconds']:.0f} | {b['sent']} | {b['decided']} | {b['ack_p50_ms']:.1f} "
          f"| {b['ack_p99_ms']:.1f} | {b['p50_ms']:.1f} | {b['p95_ms']:.1f} | {b['p99_ms']:.1f} | {b['max_ms']:.1f} "
          f"| {_cpu(b['cpu_seconds'])} |")  # fmt: skip
    met = b["p99_ms"] <= FLOOR_P99_MS and b["decided"] == b["sent"]
    print(f"\nFloor p99 ≤ {FLOOR_P99_MS:.0f} ms at 200 msg/s: {'met' if met else 'NOT met'} "
          f"(p99 {b['p99_ms']:.1f} ms at {b['rate']:.0f} msg/s, {b['sent'] - b['decided']} undecided)")  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="phase A window, seconds")
    parser.add_argument("--reference-duration", type=float, default=20.0, help="listener-alone window, seconds")
    parser.add_argument("--connections", type=int, default=16, help="MLLP connections (every phase)")
    parser.add_argument("--throughput-rate", type=float, default=None,
                        help="phase A offered rate, messages/s (default: as fast as the ACKs come)")  # fmt: skip
    parser.add_argument("--rate", type=float, default=200.0, help="phase B rate, messages/s")
    parser.add_argument("--latency-duration", type=float, default=30.0, help="phase B, seconds")
    parser.add_argument("--warmup-seconds", type=float, default=5.0, help="listener and worker warm-up, each")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="wait for outstanding decisions")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="wait for the worker to serve")
    parser.add_argument("--listener-processes", type=int, default=1, help="MEDROUTE_MLLP_PROCESSES")
    parser.add_argument("--batch-size", type=int, default=64, help="MEDROUTE_BATCH_SIZE")
    parser.add_argument("--batch-ms", type=int, default=20, help="MEDROUTE_BATCH_MS")
    parser.add_argument("--model", default="doctype-en", help="MEDROUTE_TEXT_MODEL")
    parser.add_argument("--repeated-texts", action="store_true", help="the samples' few reports, unvaried")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args(argv)
    args.tag = uuid.uuid4().hex[:6]  # control ids and the worker's app id of this run
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    terminate_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="medroute-bench-pipeline-"))
    procs: Processes | None = None
    try:
        broker, bootstrap = broker_unless_configured(work / "kafka")
        settings = KafkaSettings(bootstrap=bootstrap)
        asyncio.run(ensure_topics(settings))
        port = free_port()
        env = {"MEDROUTE_KAFKA_BOOTSTRAP": bootstrap, "MEDROUTE_HOME": str(work), "MEDROUTE_LOG_LEVEL": "WARNING"}
        listening = {"MEDROUTE_MLLP_PORT": str(port), "MEDROUTE_MLLP_PROCESSES": str(args.listener_processes)}
        listener = Child.python("listeners.mllp", {**env, **listening}, work / "listener.log")
        procs = Processes(listener, broker.pid() if broker is not None else None)
        wait_for_port(port, 60, listener.process)
        figures = eventloop.run(run(settings, port, args, procs, env, work))
    except KeyboardInterrupt:
        print(f"interrupted; logs in {work}", file=sys.stderr)
        return 130
    finally:
        for child in (procs.worker, procs.listener) if procs else ():
            if child is not None:
                child.stop()
        # The broker this run started, by its pid file: also one interrupted while it was starting.
        if LocalBroker(data_dir=work / "kafka").stop():
            shutil.rmtree(work / "kafka" / "logs", ignore_errors=True)  # the topics' data; broker.log stays
    report(figures, args)
    write_json(args.json, {"benchmark": "pipeline", **vars(args), **figures})
    print(f"(logs in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
