"""``medroute replay`` and ``replay diff`` as real processes on the real broker.

5,000 sample records go onto ``hl7.inbound`` in one batched burst, with Kafka timestamps one
millisecond apart, so a time range selects a known slice. Replays use a second version of the
document-type model (doctype-en 1.1.0: the same bundle with one label's bias raised, so some
labels and destinations really change). Only slices are replayed, to keep the suite short.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from formats.hl7.record import record_of_bytes
from medroute.config import HL7_INBOUND, REPLAY_CHECKPOINTS, REPO_ROOT, ROUTING_DECISIONS, KafkaSettings
from medroute.kafka.client import consumer, durable_producer, topic_partitions
from medroute.kafka.topics import ensure_topics
from medroute.ports import free_port
from medroute.records import Hl7Record
from models.bundle import sha256_file
from models.registry import INSTALLED_DIR
from models.text import TextClassifier
from pipeline.hl7_feed import Hl7Feed
from pipeline.outcomes import Decided
from pipeline.publish import messages_for
from pipeline.rules import load_rules
from shell.broker import LocalBroker
from shell.samples import sample_messages
from tools.operations.replay.checkpoint import Checkpoint, latest_checkpoint

MESSAGES = 5000
TIME_SLICE = (2000, 2320)  # message numbers [from, to) selected by time
KILLED_SLICE_PER_PARTITION = 60  # offsets per partition of the replay that is killed halfway
NEW_MODEL = "doctype-en@1.1.0"
LIVE_MODEL = "doctype-en@1.0.0"
LIVE_LEFT_OUT = 7  # range messages that get no live decision, so the diff has some missing


@dataclass(frozen=True)
class Stored:
    record: Hl7Record
    partition: int
    offset: int
    timestamp: int  # ms


@dataclass(frozen=True)
class Traffic:
    stored: list[Stored]  # in message-number order
    base_ms: int

    def iso(self, number: int) -> str:
        return datetime.fromtimestamp((self.base_ms + number) / 1000, UTC).isoformat(timespec="milliseconds")


def make_record(raw: bytes, message_id: str) -> Hl7Record:
    """A record as the listener stores it."""
    received_at = datetime.now(UTC).isoformat()
    return record_of_bytes(raw, peer="127.0.0.1:40000", received_at=received_at, message_id=message_id)


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaSettings]:
    """A broker of this module's own: its 5,000 records must not become every later worker's backlog."""
    data_dir = tmp_path_factory.mktemp("replay-kafka")
    broker = LocalBroker(data_dir=data_dir, port=free_port(), controller_port=free_port())
    broker.start()
    settings = KafkaSettings(bootstrap=broker.bootstrap, partitions=4, replication=1)
    asyncio.run(ensure_topics(settings))
    yield settings
    broker.stop()


@pytest.fixture(scope="module")
def traffic(kafka: KafkaSettings) -> Traffic:
    run = uuid.uuid4().hex[:8]
    samples = sample_messages(MESSAGES, seed=11, prefix=f"R{run}")
    records = [make_record(s.raw, f"{run}-{n:05d}") for n, s in enumerate(samples)]
    base_ms = int(time.time() * 1000)

    async def produce() -> list[Stored]:
        producer = durable_producer(kafka, linger_ms=5)
        await producer.start()
        try:
            futures = [
                await producer.send(HL7_INBOUND, r.to_json(), key=s.patient_id.encode(), timestamp_ms=base_ms + n)
                for n, (r, s) in enumerate(zip(records, samples, strict=True))
            ]
            metadata = await asyncio.gather(*futures)
        finally:
            await producer.stop()
        return [
            Stored(r, m.partition, m.offset, base_ms + n)
            for n, (r, m) in enumerate(zip(records, metadata, strict=True))
        ]

    began = time.monotonic()
    stored = asyncio.run(produce())
    assert time.monotonic() - began < 30
    return Traffic(stored, base_ms)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding doctype-en 1.1.0: 1.0.0 with the emergency_room_report bias raised by 1."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    directory = tmp_path_factory.mktemp("models")
    bundle = directory / "doctype-en-1.1.0"
    shutil.copytree(INSTALLED_DIR / "doctype-en", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    graph = onnx.load(bundle / "model.onnx")
    bias = next(init for init in graph.graph.initializer if init.name == "bias")
    values = numpy_helper.to_array(bias).copy()
    values[manifest["labels"].index("emergency_room_report")] += 1.0
    bias.CopyFrom(numpy_helper.from_array(values, "bias"))
    onnx.save(graph, bundle / "model.onnx")
    manifest.update(version="1.1.0", files={**manifest["files"], "model.onnx": sha256_file(bundle / "model.onnx")})
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return directory


def replay_command(
    kafka: KafkaSettings, models: Path, home: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    child_env = {
        **os.environ,
        "MEDROUTE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "MEDROUTE_MODELS_DIR": str(models),
        "MEDROUTE_HOME": str(home),
        "PYTHONPATH": str(REPO_ROOT),
        **(env or {}),
    }
    return [sys.executable, "-m", "shell.cli", "replay", *args], child_env


def run_replay(
    kafka: KafkaSettings, models: Path, home: Path, *args: str, timeout: float = 240, env: dict[str, str] | None = None
) -> str:
    command, env = replay_command(kafka, models, home, *args, env=env)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=home)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}"
    return done.stdout


def read_committed_topic(kafka: KafkaSettings, topic: str) -> list[dict[str, Any]]:
    """Every committed JSON record of ``topic``, as a read_committed user of the topic sees it."""

    async def read() -> list[dict[str, Any]]:
        reader = consumer(kafka, isolation_level="read_committed")
        await reader.start()
        try:
            tps = await topic_partitions(kafka, topic)
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            ends = await reader.end_offsets(tps)
            found = []
            while any([await reader.position(tp) < ends[tp] for tp in tps]):
                for records in (await reader.getmany(timeout_ms=500)).values():
                    found += [json.loads(r.value) for r in records]
            return found
        finally:
            await reader.stop()

    return asyncio.run(read())


def replay_decisions(kafka: KafkaSettings, replay_id: str) -> list[dict[str, Any]]:
    return [d for d in read_committed_topic(kafka, "routing.decisions.replay") if d.get("replay_id") == replay_id]


@dataclass(frozen=True)
class TimeReplay:
    replay_id: str
    expected: list[Stored]
    stdout: str


@pytest.fixture(scope="module")
def time_replay(kafka: KafkaSettings, traffic: Traffic, models_dir: Path, tmp_path_factory) -> TimeReplay:
    first, last = TIME_SLICE
    replay_id = f"t{uuid.uuid4().hex[:10]}"
    home = tmp_path_factory.mktemp("replay-time")
    stdout = run_replay(
        kafka, models_dir, home,
        "--from", traffic.iso(first), "--to", traffic.iso(last), "--model", NEW_MODEL,
        "--replay-id", replay_id, "--batch-size", "32",
    )  # fmt: skip
    return TimeReplay(replay_id, traffic.stored[first:last], stdout)


def test_a_time_range_is_replayed_exactly_once_with_the_new_model(kafka: KafkaSettings, time_replay: TimeReplay):
    decisions = replay_decisions(kafka, time_replay.replay_id)
    expected = {s.record.message_id: s for s in time_replay.expected}
    assert len(decisions) == len(expected) == TIME_SLICE[1] - TIME_SLICE[0]
    assert {d["message_id"] for d in decisions} == set(expected)
    for d in decisions:
        stored = expected[d["message_id"]]
        assert d["source_offset"] == f"{HL7_INBOUND}:{stored.partition}:{stored.offset}"
        assert d["model"] in (NEW_MODEL, None)  # None: no text, decided on the message type
    assert sum(d["model"] == NEW_MODEL for d in decisions) > len(decisions) / 2
    assert time_replay.stdout.startswith(f"replay {time_replay.replay_id}: {HL7_INBOUND} [")
    assert f"done, {len(expected)} decided" in time_replay.stdout
    checkpoint = asyncio.run(latest_checkpoint(kafka, time_replay.replay_id))
    assert checkpoint is not None and checkpoint.finished_at and checkpoint.decided == len(expected)
    assert checkpoint.total == len(expected) and checkpoint.done == checkpoint.total


def test_a_replay_killed_halfway_resumes_without_gaps_or_duplicates(
    kafka: KafkaSettings, traffic: Traffic, models_dir: Path, tmp_path: Path
):
    # The last offsets of each partition's share of the burst, named as offsets.
    by_partition: dict[int, list[Stored]] = {}
    for stored in traffic.stored:
        by_partition.setdefault(stored.partition, []).append(stored)
    chosen = {p: items[-KILLED_SLICE_PER_PARTITION - 10 : -10] for p, items in by_partition.items()}
    start = ",".join(f"{p}:{items[0].offset}" for p, items in sorted(chosen.items()))
    end = ",".join(f"{p}:{items[-1].offset + 1}" for p, items in sorted(chosen.items()))
    expected = {s.record.message_id: s for items in chosen.values() for s in items}
    replay_id = f"k{uuid.uuid4().hex[:10]}"
    command, env = replay_command(
        kafka, models_dir, tmp_path,
        "--from", start, "--to", end, "--model", NEW_MODEL, "--replay-id", replay_id,
        "--batch-size", "8", "--max-rate", "40",
    )  # fmt: skip
    child = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        checkpoint = wait_for_progress(kafka, replay_id, len(expected) // 3, deadline=time.monotonic() + 120)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert checkpoint.finished_at is None and 0 < checkpoint.done < checkpoint.total == len(expected)

    stdout = run_replay(kafka, models_dir, tmp_path, "--replay-id", replay_id)
    assert f"replay {replay_id}: resuming at " in stdout
    decisions = replay_decisions(kafka, replay_id)
    assert len(decisions) == len(expected), Counter(d["message_id"] for d in decisions).most_common(3)
    assert {d["message_id"] for d in decisions} == set(expected)
    assert sorted(d["source_offset"] for d in decisions) == sorted(
        f"{HL7_INBOUND}:{s.partition}:{s.offset}" for s in expected.values()
    )
    final = asyncio.run(latest_checkpoint(kafka, replay_id))
    assert final is not None and final.finished_at and final.decided == len(expected)


def wait_for_progress(kafka: KafkaSettings, replay_id: str, at_least: int, deadline: float) -> Checkpoint:
    while time.monotonic() < deadline:
        checkpoint = asyncio.run(latest_checkpoint(kafka, replay_id))
        if checkpoint is not None and checkpoint.done >= at_least:
            return checkpoint
        time.sleep(0.2)
    raise AssertionError(f"replay {replay_id} did not reach {at_least} records in time")


@pytest.fixture(scope="module")
def live_decisions(kafka: KafkaSettings, time_replay: TimeReplay) -> dict[str, dict[str, Any]]:
    """Live decisions of the time slice, made with 1.0.0 by the worker's own code and published as the worker
    publishes them (keyed by the patient's ordering key, not the message id), on routing.decisions.

    The first LIVE_LEFT_OUT messages of the slice get none (as if the worker had not reached them).
    """
    classifier = TextClassifier.load(LIVE_MODEL)
    feed = Hl7Feed(classifier, load_rules(labels=classifier.labels))
    outcomes = feed.process([s.record for s in time_replay.expected[LIVE_LEFT_OUT:]])
    assert all(isinstance(o, Decided) for o in outcomes)
    published = [m for o in outcomes for m in messages_for(o) if m.topic == ROUTING_DECISIONS]
    assert all(m.key != json.loads(m.value)["message_id"].encode() for m in published)

    async def publish() -> None:
        producer = durable_producer(kafka, linger_ms=5)
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(m.topic, m.value, key=m.key) for m in published])
        finally:
            await producer.stop()

    asyncio.run(publish())
    return {json.loads(m.value)["message_id"]: json.loads(m.value) for m in published}


def test_diff_counts_match_a_direct_count_of_both_topics(
    kafka: KafkaSettings, time_replay: TimeReplay, live_decisions: dict, models_dir: Path, tmp_path: Path
):
    stdout = run_replay(kafka, models_dir, tmp_path, "diff", time_replay.replay_id, "--output", str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "diff.json").read_text(encoding="utf-8"))
    assert (tmp_path / "out" / "transitions.png").read_bytes()[:4] == b"\x89PNG"

    # The direct count: both topics read here, independently of the tool.
    ids = {s.record.message_id for s in time_replay.expected}
    live = {d["message_id"]: d for d in read_committed_topic(kafka, ROUTING_DECISIONS) if d["message_id"] in ids}
    replay = {d["message_id"]: d for d in replay_decisions(kafka, time_replay.replay_id)}
    both = ids & live.keys() & replay.keys()
    labels = Counter((live[m]["label"] or "(no text)", replay[m]["label"] or "(no text)") for m in both)
    label_changed = sum(n for (a, b), n in labels.items() if a != b)
    moved = sum(sorted(live[m]["destinations"]) != sorted(replay[m]["destinations"]) for m in both)

    counts = report["counts"]
    assert counts["in_range"] == len(ids)
    assert counts["compared"] == len(both) == len(ids) - LIVE_LEFT_OUT
    assert counts["label_changed"] == label_changed > 0
    assert counts["destinations_changed"] == moved > 0
    assert report["missing"]["live"]["count"] == LIVE_LEFT_OUT == len(replay.keys() - live.keys())
    assert report["missing"]["replay"]["count"] == 0
    cells = {
        (a, b): report["matrix"][i][j]
        for i, a in enumerate(report["labels"])
        for j, b in enumerate(report["labels"])
        if report["matrix"][i][j]
    }
    assert cells == dict(labels)
    for transition in report["label_transitions"]:
        assert transition["examples"]
        for m in transition["examples"]:
            assert (live[m]["label"], replay[m]["label"]) == (transition["live"], transition["replay"])
    assert report["models"]["replay"].get(NEW_MODEL) and report["models"]["live"].get(LIVE_MODEL)
    assert f"compared {len(both)}" in stdout


def test_backfill_publishes_exactly_the_changed_decisions_to_the_live_topic(
    kafka: KafkaSettings, time_replay: TimeReplay, live_decisions: dict
):
    from tools.operations.replay.backfill import backfill

    ids = {s.record.message_id for s in time_replay.expected}
    live = {d["message_id"]: d for d in read_committed_topic(kafka, ROUTING_DECISIONS) if d["message_id"] in ids}
    replay = {d["message_id"]: d for d in replay_decisions(kafka, time_replay.replay_id)}
    def routed(decision: dict) -> tuple:
        return decision["label"], sorted(decision["destinations"])

    changed = {m for m in live.keys() & replay.keys() if routed(live[m]) != routed(replay[m])}
    assert changed

    assert asyncio.run(backfill(kafka, time_replay.replay_id)) == len(changed)
    after = [d for d in read_committed_topic(kafka, ROUTING_DECISIONS) if d["message_id"] in ids]
    backfilled = [d for d in after if d.get("replay_id") == time_replay.replay_id]
    assert sorted(d["message_id"] for d in backfilled) == sorted(changed)
    assert all(d["model"] == NEW_MODEL or d["model"] is None for d in backfilled)
    # Deliverable as the live decision was: the forwarders queue a correction behind the patient's other decisions.
    assert all(d["order_key"] and d["order_key"] == live[d["message_id"]]["order_key"] for d in backfilled)


def test_replay_topics_exist_with_a_compacted_checkpoint_topic(kafka: KafkaSettings, time_replay: TimeReplay):
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from medroute.kafka.client import connection_kwargs

    async def config() -> dict[str, str]:
        admin = AIOKafkaAdminClient(**connection_kwargs(kafka))
        await admin.start()
        try:
            described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, REPLAY_CHECKPOINTS)])
        finally:
            await admin.close()
        return {name: value for name, value, *_ in described[0].resources[0][4]}

    assert asyncio.run(config())["cleanup.policy"] == "compact"
