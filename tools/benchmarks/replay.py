"""Replay throughput against references measured in the same run, for both inbound topics.

    python -m tools.benchmarks.replay [--messages 20000] [--images 200] [--model doctype-en]
                                      [--image-model cxr-pneumonia] [--image-file RG1_UNCR.dcm] [--batch-size 64]

Starts its own Kafka broker (or uses ``MEDROUTE_KAFKA_BOOTSTRAP``), then:

HL7 — ``--messages`` sample messages (every report text distinct, as in real traffic:
:class:`tools.benchmarks.common.MessageSource`) onto ``hl7.inbound`` as the listener stores them; over that range:

* raw consume: a plain group-less aiokafka consumer reading the range, nothing else done;
* decide only: the worker's :class:`pipeline.hl7_feed.Hl7Feed` over the same records in this process, no Kafka
  (extraction, classification, routing): the ceiling of any replay;
* replay: ``medroute replay`` as its own process (read, decide, transactional write with a checkpoint
  per batch); its rate excludes start-up (model load), which the wall time includes.

DICOM — ``--images`` records of one real chest radiograph (pydicom-data's ``RG1_UNCR.dcm``, 7 MB, unless
``--image-file`` names another) onto ``dicom.inbound``, the dataset in an encrypted blob store as the
listener leaves it; then the image model alone on the decoded image (images/s) beside ``medroute replay
--topic dicom.inbound``, which reads, decrypts and decodes every blob again.

Prints Markdown tables for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from formats.hl7.record import record_of_bytes
from listeners.dicom.events import file_record
from medroute.blobstore import BlobStore
from medroute.config import DICOM_INBOUND, HL7_INBOUND, REPO_ROOT, KafkaSettings, child_environment
from medroute.kafka.client import consumer, durable_producer, topic_partitions
from medroute.kafka.topics import ensure_topics
from medroute.records import DicomRecord, Hl7Record, utc_now
from tools.benchmarks.common import MessageSource, scratch_and_broker

Spans = dict[int, tuple[int, int]]
BLOB_KEY = bytes(range(32))  # the benchmark's own store


def stored_records(count: int) -> list[tuple[bytes, Hl7Record]]:
    """(key, record) pairs as the MLLP listener stores sample messages."""
    source = MessageSource(seed=23)
    pairs = []
    for n in range(count):
        record = record_of_bytes(source.message(n, f"BR{n:08d}"), peer="127.0.0.1:0", received_at=utc_now())
        pairs.append(((record.control_id + "-patient").encode(), record))
    return pairs


def stored_images(count: int, path: Path, blobs: BlobStore) -> list[tuple[bytes, DicomRecord]]:
    """(key, record) pairs as the DICOM listener stores ``count`` receipts of the file at ``path``."""
    data = path.read_bytes()
    reference = blobs.put(data)
    records = [file_record(data, reference, "127.0.0.1:0") for _ in range(count)]
    return [(record.study_uid.encode(), record) for record in records]


async def produce(settings: KafkaSettings, topic: str, pairs: list[tuple[bytes, Hl7Record | DicomRecord]]) -> Spans:
    """Store the records; returns the range they occupy, partition -> (start, end)."""
    producer = durable_producer(settings, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, record.to_json(), key=key) for key, record in pairs]
        stored = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    spans: Spans = {}
    for meta in stored:
        start, end = spans.get(meta.partition, (meta.offset, meta.offset + 1))
        spans[meta.partition] = (min(start, meta.offset), max(end, meta.offset + 1))
    return spans


async def raw_consume(settings: KafkaSettings, spans: Spans) -> tuple[int, float]:
    """Records read and seconds taken by a plain consumer over ``spans`` of hl7.inbound."""
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


def image_model_alone(path: Path, model: str, count: int, batch_size: int) -> float:
    """Images/s of the image model on the file's display-ready image, decoded once beforehand."""
    from models.image import ImageClassifier
    from pipeline.pixels import read_dataset, representative_image

    classifier = ImageClassifier.load(model)
    pixels = representative_image(read_dataset(path.read_bytes())).pixels
    classifier.predict([pixels])  # warm-up
    began = time.perf_counter()
    for start in range(0, count, batch_size):
        classifier.predict([pixels] * min(batch_size, count - start))
    return count / (time.perf_counter() - began)


def replay(bootstrap: str, work: Path, topic: str, spans: Spans, model: str, batch_size: int,
           **env: str) -> tuple[float, float, float, str]:  # fmt: skip
    """Wall seconds of ``medroute replay`` over ``spans``, the rate it reports (start-up excluded), and its
    CPU seconds (start-up included)."""
    start = ",".join(f"{p}:{s}" for p, (s, _) in sorted(spans.items()))
    end = ",".join(f"{p}:{e}" for p, (_, e) in sorted(spans.items()))
    child_env = child_environment(MEDROUTE_KAFKA_BOOTSTRAP=bootstrap, MEDROUTE_LOG_LEVEL="WARNING",
                                  PYTHONPATH=str(REPO_ROOT), **env)  # fmt: skip
    command = [sys.executable, "-m", "shell.cli", "replay", "--topic", topic, "--from", start, "--to", end,
               "--model", model, "--batch-size", str(batch_size), "--no-progress"]  # fmt: skip
    began, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, env=child_env, capture_output=True, text=True, cwd=work, check=False)
    wall, after = time.perf_counter() - began, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    match = re.search(r"this run (\d+) records in ([\d.]+) s", done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"replay failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-2000:]}")
    return wall, int(match.group(1)) / float(match.group(2)), cpu, done.stdout


def hl7_part(settings: KafkaSettings, work: Path, args: argparse.Namespace) -> None:
    pairs = stored_records(args.messages)
    spans = asyncio.run(produce(settings, HL7_INBOUND, pairs))
    asyncio.run(raw_consume(settings, spans))  # warm-up: page cache, broker JIT
    count, raw_seconds = asyncio.run(raw_consume(settings, spans))
    load = os.getloadavg()[0]
    decide_seconds, decide_cpu = decide_only(pairs, args.model, args.batch_size)
    wall, rate, cpu, output = replay(settings.bootstrap_servers, work, HL7_INBOUND, spans, args.model, args.batch_size)
    raw_rate = count / raw_seconds
    mean_size = sum(len(r.to_json()) for _, r in pairs) / len(pairs)
    print(f"# replay benchmark, hl7.inbound: {os.cpu_count()} CPUs (load average {load:.1f} before), {count} records "
          f"(mean {mean_size:.0f} B, texts varied), model {args.model}, batch {args.batch_size}")  # fmt: skip
    print("| run | records | seconds | records/s | ratio to raw consume | CPU ms/record |")
    print("|---|---|---|---|---|---|")
    print(f"| raw aiokafka consume | {count} | {raw_seconds:.2f} | {raw_rate:,.0f} | 1.00 | - |")
    print(f"| decide only (no Kafka) | {len(pairs)} | {decide_seconds:.2f} | {len(pairs) / decide_seconds:,.0f} "
          f"| {len(pairs) / decide_seconds / raw_rate:.3f} | {decide_cpu / len(pairs) * 1000:.2f} |")  # fmt: skip
    print(f"| medroute replay (run) | {count} | {count / rate:.2f} | {rate:,.0f} | {rate / raw_rate:.3f} | - |")
    print(f"| medroute replay (wall, with start-up) | {count} | {wall:.2f} | {count / wall:,.0f} "
          f"| {count / wall / raw_rate:.3f} | {cpu / count * 1000:.2f} |")  # fmt: skip
    print(f"\nFloor ≥ 1,500 records/s for 20,000 records: {'met' if rate >= 1500 else 'NOT met'} ({rate:,.0f}/s)")
    print(f"\n{output.strip()}\n")


def dicom_part(settings: KafkaSettings, work: Path, args: argparse.Namespace) -> None:
    from pydicom.data import get_testdata_file

    path = Path(args.image_file) if Path(args.image_file).exists() else Path(get_testdata_file(args.image_file))
    blobs = BlobStore(work / "blobs", BLOB_KEY)
    pairs = stored_images(args.images, path, blobs)
    spans = asyncio.run(produce(settings, DICOM_INBOUND, pairs))
    alone = image_model_alone(path, args.image_model, args.images, args.batch_size)
    store = {"MEDROUTE_BLOB_DIR": str(blobs.root), "MEDROUTE_BLOB_KEY": BLOB_KEY.hex()}
    _, rate, cpu, output = replay(settings.bootstrap_servers, work, DICOM_INBOUND, spans, args.image_model,
                                  args.batch_size, **store)  # fmt: skip
    print(f"# replay benchmark, dicom.inbound: {args.images} receipts of {path.name} ({path.stat().st_size:,} B), "
          f"model {args.image_model}, batch {args.batch_size}")  # fmt: skip
    print("| run | images | images/s | ratio to the model alone | CPU ms/image |")
    print("|---|---|---|---|---|")
    print(f"| image model alone (decoded once) | {args.images} | {alone:,.0f} | 1.00 | - |")
    print(f"| medroute replay (run: blob read, decrypt, decode, classify, route, write) | {args.images} "
          f"| {rate:,.1f} | {rate / alone:.3f} | {cpu / args.images * 1000:.1f} |")  # fmt: skip
    print(f"\n{output.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000, help="HL7 records (0: skip)")
    parser.add_argument("--images", type=int, default=200, help="DICOM records (0: skip)")
    parser.add_argument("--model", default="doctype-en")
    parser.add_argument("--image-model", default="cxr-pneumonia")
    parser.add_argument("--image-file", default="RG1_UNCR.dcm", help="a path, or a pydicom test data file name")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    with scratch_and_broker("medroute-bench-replay-") as (work, _, bootstrap):
        settings = KafkaSettings(bootstrap=bootstrap)
        asyncio.run(ensure_topics(settings))
        if args.messages:
            hl7_part(settings, work, args)
        if args.images:
            dicom_part(settings, work, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
