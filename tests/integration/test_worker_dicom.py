"""The worker's DICOM agent as a real process on the real broker.

Datasets go into a blob store directory and their ``DicomRecord``s onto ``dicom.inbound`` (as the
DICOM listener stores them); the worker must publish one decision per record: a chest radiograph
through the image model (a tiny real ONNX bundle named cxr-pneumonia), a CT on its metadata alone,
and a dead letter for a record whose blob is missing or whose pixels cannot be decoded, with audit
events that carry no UID in clear.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

from pydicom.data import get_testdata_file

from medroute.blobstore import BlobStore
from medroute.config import AUDIT_EVENTS, DICOM_DEADLETTER, DICOM_INBOUND, KafkaSettings
from medroute.kafka.client import durable_producer
from medroute.logs import hash_id
from medroute.records import DicomRecord
from tests.integration.processes import ChildProcess
from tests.integration.test_worker import assert_stopped_cleanly, decisions_for, read
from tests.unit.test_pipeline_support import build_tiny_image_bundle, dicom_record

BLOB_KEY = bytes(range(32))
TEST_MODEL = "cxr-pneumonia@0.0.1-test"


def produce(kafka: KafkaSettings, records: list[DicomRecord]) -> None:
    async def send() -> None:
        producer = durable_producer(kafka)
        await producer.start()
        try:
            for record in records:
                await producer.send_and_wait(DICOM_INBOUND, record.to_json(), key=record.study_uid.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def test_images_get_one_decision_each_through_the_image_model_or_metadata_and_bad_ones_dead_letters(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    blobs = BlobStore(tmp_path / "blobs", BLOB_KEY)
    build_tiny_image_bundle(tmp_path / "models" / "cxr-pneumonia")
    run = uuid.uuid4().hex[:8]

    def stored(name: str, suffix: str, **overrides: str) -> DicomRecord:
        data = Path(get_testdata_file(name)).read_bytes()
        return dicom_record(data, blobs.put(data), f"{run}-{suffix}", **overrides)

    cxr = stored("RG1_UNCR.dcm", "cxr")  # CR, CHEST, PA, MONOCHROME1
    ct = stored("CT_small.dcm", "ct")
    lost = replace(stored("CT_small.dcm", "lost"), blob="sha256:" + "e" * 64)
    broken = stored("JPEG-lossy.dcm", "broken", modality="DX", body_part="CHEST", view_position="AP")
    produce(kafka, [cxr, ct, lost, broken])

    worker = ChildProcess(
        "pipeline",
        {
            "MEDROUTE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
            "MEDROUTE_HOME": str(tmp_path),
            "MEDROUTE_BATCH_MS": "50",
            "MEDROUTE_BLOB_DIR": str(blobs.root),
            "MEDROUTE_BLOB_KEY": BLOB_KEY.hex(),
            "MEDROUTE_MODELS_DIR": str(tmp_path / "models"),
            "MEDROUTE_IMAGE_MODEL": TEST_MODEL,
        },
        log_path=tmp_path / "worker-dicom.log",
    ).start()
    decided_ids = {cxr.message_id, ct.message_id}
    rejected_ids = {lost.message_id, broken.message_id}
    try:
        decisions = decisions_for(kafka, decided_ids, len(decided_ids))
        letters = read(kafka, DICOM_DEADLETTER, lambda ls: sum(x["message_id"] in rejected_ids for x in ls) >= 2)
    finally:
        worker.stop(timeout=30)
    assert_stopped_cleanly(worker)

    assert Counter(d["message_id"] for d in decisions) == Counter(dict.fromkeys(decided_ids, 1)), worker.log()[-4000:]
    by_id = {d["message_id"]: d for d in decisions}
    chest = by_id[cxr.message_id]
    assert (chest["kind"], chest["message_type"], chest["model"]) == ("dicom", "DICOM^CR", TEST_MODEL)
    assert chest["label"] in ("normal", "pneumonia") and 0.0 <= chest["confidence"] <= 1.0
    assert chest["rule"] in ("chest-pneumonia", "chest-normal", "image-below-model-threshold")
    assert "pacs" in chest["destinations"] and chest["_key"] == hash_id(cxr.study_uid) and chest["blob"] == cxr.blob
    metadata_only = by_id[ct.message_id]
    assert (metadata_only["message_type"], metadata_only["model"], metadata_only["label"]) == ("DICOM^CT", None, None)
    assert (metadata_only["rule"], metadata_only["destinations"]) == ("images", ["pacs"])

    reasons = {x["message_id"]: (x["source"], x["reason"]) for x in letters if x["message_id"] in rejected_ids}
    assert reasons == {
        lost.message_id: ("worker", "blob_unavailable"),
        broken.message_id: ("worker", "undecodable_pixels"),
    }

    def all_accounted(events: list[dict]) -> bool:
        done = {e["message_id"] for e in events if e["action"] in ("route", "reject")}
        return decided_ids | rejected_ids <= done

    audit = [e for e in read(kafka, AUDIT_EVENTS, all_accounted) if e["message_id"] in decided_ids | rejected_ids]
    actions: dict[str, Counter] = defaultdict(Counter)
    for event in audit:
        actions[event["message_id"]][event["action"]] += 1
        assert event["actor"] == "worker"
    assert actions[cxr.message_id] == Counter(["receive", "classify", "route"])
    assert actions[ct.message_id] == Counter(["receive", "route"])
    assert actions[lost.message_id] == actions[broken.message_id] == Counter(["reject"])
    classify = next(e for e in audit if e["action"] == "classify")
    assert classify["details"]["model"] == TEST_MODEL and classify["details"]["inverted"] is True
    text = str(audit)
    for record in (cxr, ct, lost, broken):
        for uid in (record.study_uid, record.series_uid, record.sop_instance_uid):
            assert uid not in text
