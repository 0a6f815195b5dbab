"""MLLP throughput and ACK latency with commit-before-ACK, against raw aiokafka in the same run.

    python -m tools.benchmarks.mllp [--messages 4000] [--connections 1 4 16] [--paced-rate 500]

Starts its own Kafka broker (or uses ``MEDROUTE_KAFKA_BOOTSTRAP``) and its own listener process,
then measures, for each connection count: messages/s and ACK latency p50/p99 through the listener,
and raw ``send_and_wait`` of the same record sizes with as many concurrent senders (the reference:
what Kafka itself gives one acks=all producer). Last, a paced run at ``--paced-rate`` msg/s gives the
latency a steady feed sees. Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from formats.hl7.mllp_client import MllpClient
from medroute import eventloop
from medroute.config import KafkaSettings
from medroute.kafka.topics import ensure_topics
from medroute.ports import free_port, wait_for_port
from shell.broker import LocalBroker
from shell.samples import sample_messages
from tools.benchmarks.common import (
    BROKER_WARM_UP_SENDS,
    Child,
    CpuMeter,
    percentile,
    raw_send_and_wait,
    scratch_and_broker,
)


@dataclass
class Result:
    name: str
    connections: int
    messages: int
    seconds: float
    latencies_ms: list[float]
    cpu_ms_per_message: dict[str, float] | None = None  # process -> CPU time per message

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


async def _raw_kafka(settings: KafkaSettings, payloads: list[bytes], connections: int) -> Result:
    elapsed, latencies = await raw_send_and_wait(settings, payloads, connections)
    return Result("raw aiokafka send_and_wait", connections, len(payloads), elapsed, latencies)


async def _mllp(port: int, messages: list[bytes], connections: int, rate: float | None = None) -> Result:
    latencies: list[float] = []
    interval = connections / rate if rate else 0.0

    async def sender(index: int, share: list[bytes]) -> None:
        client = MllpClient("127.0.0.1", port)
        await client.connect()
        # Paced senders are staggered: started together they would send in bursts of `connections`.
        next_at = time.perf_counter() + interval * index / connections
        for message in share:
            if interval:
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            began = time.perf_counter()
            ack = await client.send(message, timeout=30)
            latencies.append((time.perf_counter() - began) * 1000)
            if b"|AA|" not in ack and b"MSA#AA" not in ack:
                raise RuntimeError(f"unexpected ACK {ack[:120]!r}")
        await client.close()

    began = time.perf_counter()
    await asyncio.gather(*(sender(i, messages[i::connections]) for i in range(connections)))
    elapsed = time.perf_counter() - began
    name = f"MLLP paced {rate:.0f}/s" if rate else "MLLP commit-before-ACK"
    return Result(name, connections, len(messages), elapsed, latencies)


def _with_cpu(run: Callable[[], Result], processes: dict[str, int]) -> Result:
    """Run a measurement and record where the CPU went: the sender (this process) and ``processes``."""
    meter = CpuMeter(processes).start()
    result = run()
    cpu = meter.read()
    cpu["sender"] = cpu.pop("bench")
    result.cpu_ms_per_message = {name: seconds * 1000 / result.messages for name, seconds in cpu.items()}
    return result


def _row(result: Result, reference: Result | None) -> str:
    ratio = f"{result.rate / reference.rate:.2f}" if reference else "1.00"
    cpu = result.cpu_ms_per_message or {}
    cpu_cells = " | ".join(f"{cpu[name]:.3f}" if name in cpu else "-" for name in ("listener", "broker", "sender"))
    return (
        f"| {result.name} | {result.connections} | {result.messages} | {result.rate:,.0f} | {ratio} "
        f"| {statistics.median(result.latencies_ms):.2f} | {result.percentile(0.99):.2f} | {cpu_cells} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--paced-rate", type=float, default=500.0)
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--listener-processes", type=int, default=1, help="MEDROUTE_MLLP_PROCESSES")
    args = parser.parse_args(argv)
    with scratch_and_broker("medroute-bench-mllp-") as (work, broker, bootstrap):
        _measure(args, work, broker, bootstrap)
    return 0


def _measure(args: argparse.Namespace, work: Path, broker: LocalBroker | None, bootstrap: str) -> None:
    settings = KafkaSettings(bootstrap=bootstrap)
    asyncio.run(ensure_topics(settings))
    port = free_port()
    env = {"MEDROUTE_KAFKA_BOOTSTRAP": bootstrap, "MEDROUTE_MLLP_PORT": str(port),
           "MEDROUTE_HOME": str(work), "MEDROUTE_LOG_LEVEL": "WARNING",
           "MEDROUTE_MLLP_PROCESSES": str(args.listener_processes)}
    listener = Child.python("listeners.mllp", env, work / "listener.log")
    try:
        wait_for_port(port, 30, listener.process)
        # Each run sends fresh control ids: a resent id would be answered by the duplicate window.
        def fresh(count: int, prefix: str) -> list[bytes]:
            return [m.raw for m in sample_messages(count, seed=11, prefix=prefix)]

        messages = fresh(args.messages, "B0-")
        # The raw reference sends records of the size the listener writes (the JSON envelope).
        envelope_overhead = 420
        payloads = [b"x" * (len(m) * 4 // 3 + envelope_overhead) for m in messages]
        # Warm-up: the broker's JVM first (see BROKER_WARM_UP_SENDS), then the listener.
        eventloop.run(_raw_kafka(settings, payloads * (BROKER_WARM_UP_SENDS // len(payloads) + 1), 16))
        eventloop.run(_mllp(port, fresh(2000, "W-"), 16))
        rows = [
            "| run | connections | messages | msg/s | ratio to raw | ACK p50 ms | ACK p99 ms "
            "| CPU ms/msg listener | broker | sender |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        broker_pid = broker.pid() if broker is not None else None
        broker_cpu = {"broker": broker_pid} if broker_pid else {}
        for connections in args.connections:
            reference = _with_cpu(lambda c=connections: eventloop.run(_raw_kafka(settings, payloads, c)), broker_cpu)
            run_messages = fresh(args.messages, f"B{connections}-")
            measured = _with_cpu(
                lambda c=connections, m=run_messages: eventloop.run(_mllp(port, m, c)),
                {"listener": listener.pid, **broker_cpu},
            )
            rows += [_row(reference, None), _row(measured, reference)]
        paced_count = int(args.paced_rate * args.paced_seconds)
        paced_messages = fresh(paced_count, "P-")
        paced = _with_cpu(
            lambda: eventloop.run(_mllp(port, paced_messages, 16, rate=args.paced_rate)),
            {"listener": listener.pid, **broker_cpu},
        )
        rows.append(_row(paced, None))
        print(
            f"# MLLP benchmark: {os.cpu_count()} CPUs, mean message {statistics.mean(map(len, messages)):.0f} B, "
            f"{args.listener_processes} listener process(es)"
        )
        print("\n".join(rows))
    finally:
        listener.stop()


if __name__ == "__main__":
    sys.exit(main())
