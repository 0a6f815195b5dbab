"""Replay throughput against the raw consume rate of the same range, measured in the same run.

    python -m tools.benchmarks.replay [--messages 1500] [--model doctype-en] [--batch-size 64]

Starts its own Kafka broker (or uses ``MEDROUTE_KAFKA_BOOTSTRAP``), puts ``--messages`` sample HL7
records onto ``hl7.inbound`` (as the listener stores them), then measures over that range:

* raw consume: a plain group-less aiokafka consumer reading the range, nothing else done;
* decide only: the worker's :class:`pipeline.hl7_feed.Hl7Feed` over the same records in this process, no Kafka
  (extraction with the full hl7apy parse, classification, routing): the ceiling of any replay;
* replay: ``medroute replay`` as its own process (read, decide, transactional write with a checkpoint
  per batch); its rate excludes start-up (model load), which the wall time includes.

Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from formats.hl7.record import record_of_bytes
from medroute.config import HL7_INBOUND, REPO_ROOT, KafkaSettings, child_environment
from medroute.kafka.client import consumer, durable_producer, topic_partitions
from medroute.kafka.topics import ensure_topics
from medroute.records import Hl7Record, utc_now
from shell.broker import broker_unless_configured
from shell.samples import sample_messages


def stored_records(count: int) -> list[tuple[bytes, Hl7Record]]:
    """(key, record) pairs as the MLLP listener stores sample messages."""
    pairs = []
    for sample in sample_messages(count, seed=23, prefix="BR"):
        record = record_of_bytes(sample.raw, peer="127.0.0.1:0", received_at=utc_now())
        pairs.append((sample.patient_id.encode(), record))
    return pairs


async def produce(settings: KafkaSettings, pairs: list[tuple[bytes, Hl7Record]]) -> dict[int, tuple[int, int]]:
    """Store the records; returns the range they occupy, partition -> (start, end)."""
    producer = durable_producer(settings, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(HL7_INBOUND, record.to_json(), key=key) for key, record in pairs]
        stored = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    spans: dict[int, tuple[int, int]] = {}
    for meta in stored:
        start, end = spans.get(meta.partition, (meta.offset, meta.offset + 1))
        spans[meta.partition] = (min(start, meta.offset), max(end, meta.offset + 1))
    return spans


async def raw_consume(settings: KafkaSettings, spans: dict[int, tuple[int, int]]) -> tuple[int, float]:
    """Records read and seconds taken by a plain consumer over ``spans``."""
    reader = consumer(settings)
    await reader.start()
    try:
        tps = {tp.partition: tp for tp in await topic_partitions(settings, HL7_INBOUND)}
        reader.assign([tps[p] for p in spans])
        for p, (start, _) in spans.items():
            reader.seek(tps[p], start)
        count, began = 0, time.perf_counter()
        pending = set(spans)
        while pending:
            for tp, records in (await reader.getmany(timeout_ms=1000)).items():
                count += sum(1 for r in records if r.offset < spans[tp.partition][1])
                if records and records[-1].offset + 1 >= spans[tp.partition][1]:
                    pending.discard(tp.partition)
        return count, time.perf_counter() - began
    finally:
        await reader.stop()


def decide_only(pairs: list[tuple[bytes, Hl7Record]], model: str, batch_size: int) -> tuple[float, float]:
    """Seconds (wall, CPU) for the worker's feed to decide every record, no Kafka."""
    from models.text import TextClassifier
    from pipeline.hl7_feed import Hl7Feed
    from pipeline.rules import load_rules

    classifier = TextClassifier.load(model)
    feed = Hl7Feed(classifier, load_rules(labels=classifier.labels))
    records = [record for _, record in pairs]
    began, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(records), batch_size):
        feed.process(records[start : start + batch_size])
    return time.perf_counter() - began, time.process_time() - cpu


def replay(
    bootstrap: str, work: Path, spans: dict[int, tuple[int, int]], model: str, batch_size: int
) -> tuple[float, float, float, str]:
    """Wall seconds of ``medroute replay`` over ``spans``, the rate it reports (start-up excluded), and its
    CPU seconds (start-up included)."""
    start = ",".join(f"{p}:{s}" for p, (s, _) in sorted(spans.items()))
    end = ",".join(f"{p}:{e}" for p, (_, e) in sorted(spans.items()))
    env = child_environment(MEDROUTE_KAFKA_BOOTSTRAP=bootstrap, MEDROUTE_LOG_LEVEL="WARNING", PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "shell.cli", "replay", "--from", start, "--to", end, "--model", model,
               "--batch-size", str(batch_size), "--no-progress"]  # fmt: skip
    began, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=work, check=True)
    wall, after = time.perf_counter() - began, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    match = re.search(r"this run (\d+) records in ([\d.]+) s", done.stdout)
    if match is None:
        raise RuntimeError(f"unexpected replay output:\n{done.stdout}\n{done.stderr[-2000:]}")
    return wall, int(match.group(1)) / float(match.group(2)), cpu, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--model", default="doctype-en")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="medroute-bench-replay-"))
    broker, bootstrap = broker_unless_configured(work / "kafka")
    settings = KafkaSettings(bootstrap=bootstrap)
    try:
        asyncio.run(ensure_topics(settings))
        pairs = stored_records(args.messages)
        spans = asyncio.run(produce(settings, pairs))
        asyncio.run(raw_consume(settings, spans))  # warm-up: page cache, broker JIT
        count, raw_seconds = asyncio.run(raw_consume(settings, spans))
        load = os.getloadavg()[0]
        decide_seconds, decide_cpu = decide_only(pairs, args.model, args.batch_size)
        wall, replay_rate, replay_cpu, output = replay(bootstrap, work, spans, args.model, args.batch_size)
    finally:
        if broker is not None:
            broker.stop()
    raw_rate = count / raw_seconds
    mean_size = sum(len(r.to_json()) for _, r in pairs) / len(pairs)
    print(f"# replay benchmark: {os.cpu_count()} CPUs (load average {load:.1f} before), {count} records "
          f"(mean {mean_size:.0f} B), model {args.model}, batch {args.batch_size}")  # fmt: skip
    print("| run | records | seconds | records/s | ratio to raw consume | CPU ms/record |")
    print("|---|---|---|---|---|---|")
    print(f"| raw aiokafka consume | {count} | {raw_seconds:.2f} | {raw_rate:,.0f} | 1.00 | - |")
    print(f"| decide only (no Kafka) | {len(pairs)} | {decide_seconds:.2f} | {len(pairs) / decide_seconds:,.1f} "
          f"| {len(pairs) / decide_seconds / raw_rate:.4f} | {decide_cpu / len(pairs) * 1000:.1f} |")  # fmt: skip
    print(f"| medroute replay (run) | {count} | {count / replay_rate:.2f} | {replay_rate:,.1f} "
          f"| {replay_rate / raw_rate:.4f} | - |")  # fmt: skip
    print(f"| medroute replay (wall, with start-up) | {count} | {wall:.2f} | {count / wall:,.1f} "
          f"| {count / wall / raw_rate:.4f} | {replay_cpu / count * 1000:.1f} |")  # fmt: skip
    print(f"\n{output.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
