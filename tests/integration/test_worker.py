"""The classification worker as a real process on the real broker.

Records go straight onto ``hl7.inbound`` (as the listener stores them); the worker (``python -m
pipeline``) must publish exactly one decision per message, its audit events, a dead letter for a
payload that is not a record, and nothing more for a message delivered again, even after it was
stopped and started again (the ``decided`` table is restored from its changelog).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from medroute.config import AUDIT_EVENTS, HL7_DEADLETTER, HL7_INBOUND, ROUTING_DECISIONS, KafkaSettings
from medroute.kafka.client import durable_producer
from medroute.records import Hl7Record
from tests.integration.processes import ChildProcess
from tests.integration.topic_reading import read_topic_sync
from tests.unit.test_pipeline_support import fixture_record

WORKER_MODULE = "pipeline"


def start_worker(kafka: KafkaSettings, home: Path, name: str) -> ChildProcess:
    return ChildProcess(
        WORKER_MODULE,
        {"MEDROUTE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers, "MEDROUTE_HOME": str(home), "MEDROUTE_BATCH_MS": "50"},
        log_path=home / f"{name}.log",
    ).start()


def produce(kafka: KafkaSettings, items: list[tuple[bytes, bytes]]) -> None:
    """(key, value) pairs onto hl7.inbound, in order, each stored before the next is sent."""

    async def send() -> None:
        producer = durable_producer(kafka)
        await producer.start()
        try:
            for key, value in items:
                await producer.send_and_wait(HL7_INBOUND, value, key=key)
        finally:
            await producer.stop()

    asyncio.run(send())


def assert_stopped_cleanly(worker: ChildProcess) -> None:
    code = worker.stop(timeout=30)
    assert code == 0, f"worker exited with {code}:\n{worker.log()[-4000:]}"


def read(kafka: KafkaSettings, topic: str, until: Callable[[list[dict]], bool], timeout: float = 120) -> list[dict]:
    """Every JSON record on ``topic``, read again until ``until(records)`` holds or the time is up."""
    return read_topic_sync(kafka, topic, until=until, timeout=timeout)


def decisions_for(kafka: KafkaSettings, ids: set[str], expected: int, timeout: float = 120) -> list[dict]:
    found = read(kafka, ROUTING_DECISIONS, lambda ds: sum(d["message_id"] in ids for d in ds) >= expected, timeout)
    return [d for d in found if d["message_id"] in ids]


@pytest.fixture
def batch() -> dict[str, tuple[Hl7Record, str]]:
    """Fresh message ids per run: (record, patient key) by message id."""
    run = uuid.uuid4().hex[:8]
    records = [
        (fixture_record("oru_r01_radiology.hl7", message_id=f"{run}-oru"), "MRN200871"),
        (fixture_record("mdm_t02.hl7", message_id=f"{run}-mdm"), "MRN300442"),
        (fixture_record("adt_a01.hl7", message_id=f"{run}-adt"), "MRN100234"),
        (fixture_record("gb18030_chinese.hl7", "gb18030", message_id=f"{run}-gb"), "MRN800001"),
        (fixture_record("custom_delimiters.hl7", message_id=f"{run}-custom"), "MRN600001"),
    ]
    return {record.message_id: (record, key) for record, key in records}


def test_one_decision_per_message_with_audit_and_no_second_one_for_a_redelivery(
    kafka: KafkaSettings, batch: dict[str, tuple[Hl7Record, str]], tmp_path: Path
) -> None:
    ids = set(batch)
    oru_id = next(i for i in ids if i.endswith("-oru"))
    oru, oru_key = batch[oru_id]
    garbage = f"not a record {uuid.uuid4().hex}".encode()
    items = [(key.encode(), record.to_json()) for record, key in batch.values()]
    items.insert(2, (oru_key.encode(), oru.to_json()))  # the same message twice (same message_id)
    items.append((b"MRN999999", garbage))
    produce(kafka, items)

    worker = start_worker(kafka, tmp_path, "worker-1")
    try:
        decisions = decisions_for(kafka, ids, len(ids))
    finally:
        worker.stop(timeout=30)
    assert_stopped_cleanly(worker)
    assert Counter(d["message_id"] for d in decisions) == Counter({i: 1 for i in ids}), worker.log()[-4000:]
    by_id = {d["message_id"]: d for d in decisions}
    for decision in by_id.values():
        assert decision["_key"] == decision["order_key"] and decision["source_offset"].startswith("hl7.inbound:")
        assert "item" not in decision  # no PHI on the decisions topic: the forwarders read the record
        assert decision["kind"] == "hl7" and decision["rule"] and decision["destinations"]
        assert decision["decided_at"]
    oru_decision = by_id[oru_id]
    assert oru_decision["message_type"] == "ORU^R01^ORU_R01"
    assert oru_decision["model"] and "@" in oru_decision["model"]
    assert oru_decision["label"] and 0.0 <= oru_decision["confidence"] <= 1.0
    adt_decision = by_id[next(i for i in ids if i.endswith("-adt"))]
    assert (adt_decision["model"], adt_decision["label"], adt_decision["confidence"]) == (None, None, None)
    assert (adt_decision["rule"], adt_decision["destinations"]) == ("adt-events", ["ehr-adt"])
    assert by_id[next(i for i in ids if i.endswith("-custom"))]["message_type"] == "ORU^R01^ORU_R01"

    def all_routed(events: list[dict]) -> bool:
        return sum(e["message_id"] in ids and e["action"] == "route" for e in events) >= len(ids)

    audit = read(kafka, AUDIT_EVENTS, all_routed)
    actions: dict[str, Counter] = defaultdict(Counter)
    for event in audit:
        if event["message_id"] in ids:
            actions[event["message_id"]][event["action"]] += 1
            assert event["actor"] == "worker"
    for message_id in batch:
        expected = Counter(["receive", "route"] if message_id.endswith("-adt") else ["receive", "classify", "route"])
        assert actions[message_id] == expected, (message_id, actions[message_id])
    receive = next(e for e in audit if e["message_id"] == oru_id and e["action"] == "receive")
    assert receive["details"]["received_at"] == oru.received_at and receive["details"]["peer"] == oru.peer
    classify = next(e for e in audit if e["message_id"] == oru_id and e["action"] == "classify")
    assert classify["details"]["model"] == oru_decision["model"]
    assert classify["details"]["label"] == oru_decision["label"]
    audit_text = str([e for e in audit if e["message_id"] in ids])
    for secret in ("MRN200871", "SAMPLE", "RAD55501", "lungs are clear", "EXAMPLE^CAROL"):
        assert secret not in audit_text

    letters = read(kafka, HL7_DEADLETTER, lambda ls: any(_raw_is(letter, garbage) for letter in ls))
    (letter,) = [letter for letter in letters if _raw_is(letter, garbage)]
    assert (letter["source"], letter["reason"]) == ("worker", "unreadable_record")

    # Stopped and started again, the worker is handed the same message once more (as after a crash
    # before its offset was committed): the restored table recognises it. A fresh message with the
    # same key, so on the same partition and after it, shows when the duplicate has been passed.
    marker = fixture_record("enhanced_al.hl7", message_id=f"{oru_id}-marker")
    produce(kafka, [(oru_key.encode(), oru.to_json()), (oru_key.encode(), marker.to_json())])
    worker = start_worker(kafka, tmp_path, "worker-2")
    try:
        decisions_for(kafka, {marker.message_id}, 1)
    finally:
        worker.stop(timeout=30)
    assert_stopped_cleanly(worker)
    again = decisions_for(kafka, ids | {marker.message_id}, len(ids) + 1, timeout=5)
    assert Counter(d["message_id"] for d in again) == Counter({i: 1 for i in ids | {marker.message_id}})


def _raw_is(letter: dict, raw: bytes) -> bool:
    return letter.get("raw") == base64.b64encode(raw).decode()
