"""DICOM records through the DICOM feed and its agent: model choice, dead letters, decisions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import faust
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from medroute.blobstore import BlobStore
from medroute.config import AUDIT_EVENTS, DICOM_DEADLETTER, ROUTING_DECISIONS, KafkaSettings
from medroute.logs import hash_id
from medroute.records import DicomRecord
from pipeline.agents import install
from pipeline.app import create_app
from pipeline.dicom_feed import DicomFeed, wants_image_model
from pipeline.ledger import DICOM_TABLE_NAME
from pipeline.outcomes import Decided, Rejected
from pipeline.publish import messages_for
from pipeline.rules import load_rules
from pipeline.settings import WorkerSettings
from tests.unit.test_pipeline_agent import RecordingPublisher, settle
from tests.unit.test_pipeline_support import CXR_LABELS, DOCTYPE_LABELS, FakeImageClassifier, dicom_record

RULES = load_rules(labels={"hl7": DOCTYPE_LABELS, "dicom": CXR_LABELS})


def file_bytes(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", bytes(range(32)))


def stored(blobs: BlobStore, name: str, message_id: str, **overrides: str) -> DicomRecord:
    data = file_bytes(name)
    return dicom_record(data, blobs.put(data), message_id, **overrides)


def chest(blobs: BlobStore, message_id: str, name: str = "CT_small.dcm") -> DicomRecord:
    """A small dataset labelled as a frontal chest CR (selection reads the record's metadata)."""
    return stored(blobs, name, message_id, modality="CR", body_part="CHEST", view_position="PA")


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"modality": "CR", "body_part": "CHEST", "view_position": "PA"}, True),
        ({"modality": "DX", "body_part": "chest", "view_position": "AP"}, True),
        ({"modality": "DX", "body_part": "CHEST", "view_position": ""}, True),
        ({"modality": "CR", "body_part": "", "study_description": "XR Thorax 1 view"}, True),
        ({"modality": "DX", "body_part": "", "series_description": "CXR portable"}, True),
        ({"modality": "CR", "body_part": "", "study_description": "Lungs PA"}, True),
        ({"modality": "DX", "body_part": "CHEST", "view_position": "LL"}, False),  # lateral
        ({"modality": "CR", "body_part": "CHEST", "series_description": "Chest LAT"}, False),
        ({"modality": "CT", "body_part": "CHEST"}, False),
        ({"modality": "MR", "study_description": "MRI chest"}, False),
        ({"modality": "CR", "body_part": "HAND"}, False),
        ({"modality": "DX", "body_part": "", "study_description": "Thoracic spine"}, False),
    ],
)
def test_the_image_model_is_chosen_from_the_metadata(blobs: BlobStore, metadata: dict, expected: bool) -> None:
    blank = {"body_part": "", "view_position": "", "study_description": "", "series_description": ""}
    record = stored(blobs, "CT_small.dcm", "m", **{**blank, **metadata})
    assert wants_image_model(record) is expected


def test_chest_radiographs_are_classified_in_one_call_and_others_decided_on_metadata(blobs: BlobStore) -> None:
    classifier = FakeImageClassifier(answers=[("pneumonia", 0.93), ("normal", 0.88), ("pneumonia", 0.41)])
    batch = [
        stored(blobs, "RG1_UNCR.dcm", "cxr-real"),  # CR, CHEST, PA, MONOCHROME1
        stored(blobs, "CT_small.dcm", "ct"),
        chest(blobs, "cxr-normal"),
        chest(blobs, "cxr-unsure", "MR_small.dcm"),
    ]
    outcomes = DicomFeed(classifier, RULES, blobs).process(batch)
    assert [o.message_id for o in outcomes] == ["cxr-real", "ct", "cxr-normal", "cxr-unsure"]
    assert all(isinstance(o, Decided) for o in outcomes)
    (images,) = classifier.calls  # one predict call, for the three chest images only
    assert len(images) == 3
    assert all(i.ndim == 2 and i.dtype == np.float32 and i.min() >= 0 and i.max() <= 1 for i in images)
    assert images[0].shape == (1955, 1841)

    decisions = {o.message_id: o.decision for o in outcomes}
    real = decisions["cxr-real"]
    assert (real.kind, real.message_type, real.model) == ("dicom", "DICOM^CR", "fake-cxr@0.0.1")
    assert (real.label, real.confidence, real.rule) == ("pneumonia", 0.93, "chest-pneumonia")
    assert real.destinations == ["radiologist-priority", "pacs"]
    assert (decisions["cxr-normal"].rule, decisions["cxr-normal"].destinations) == ("chest-normal", ["pacs"])
    unsure = decisions["cxr-unsure"]
    assert (unsure.rule, unsure.destinations) == ("image-below-model-threshold", ["review-queue", "pacs"])
    ct = decisions["ct"]
    assert (ct.message_type, ct.model, ct.label, ct.confidence) == ("DICOM^CT", None, None, None)
    assert (ct.rule, ct.destinations) == ("images", ["pacs"])

    summary = outcomes[0].content
    assert summary is not None and (summary.frames, summary.frame, summary.voi, summary.inverted) == (
        1,
        0,
        "window",
        True,
    )
    assert outcomes[1].content is None


def test_without_an_image_model_every_image_is_decided_on_metadata(blobs: BlobStore) -> None:
    (outcome,) = DicomFeed(None, RULES, blobs).process([chest(blobs, "cxr")])
    assert isinstance(outcome, Decided) and outcome.classification is None
    assert (outcome.decision.model, outcome.decision.rule, outcome.decision.destinations) == (None, "images", ["pacs"])


def test_bad_blobs_and_pixels_become_dead_letters_and_the_batch_goes_on(blobs: BlobStore, tmp_path: Path) -> None:
    classifier = FakeImageClassifier(answers=[("normal", 0.9)])
    good = chest(blobs, "good")
    missing = replace(chest(blobs, "missing"), blob="sha256:" + "0" * 64)
    other_key = BlobStore(tmp_path / "blobs", bytes(32))  # same directory, wrong key: fails authentication
    undecryptable_data = file_bytes("MR_small.dcm") + b"\0"
    undecryptable = dicom_record(undecryptable_data, other_key.put(undecryptable_data), "wrong-key")
    not_dicom = replace(chest(blobs, "not-dicom"), blob=blobs.put(b"MZ this is not a DICOM file" * 10))
    broken = chest(blobs, "broken", "JPEG-lossy.dcm")  # a chest by metadata whose JPEG cannot be decoded
    no_pixels_data = file_bytes("rtplan.dcm")
    no_pixels = dicom_record(no_pixels_data, blobs.put(no_pixels_data), "no-pixels", modality="DX", body_part="CHEST")
    batch = [missing, good, undecryptable, not_dicom, broken, no_pixels]

    outcomes = DicomFeed(classifier, RULES, blobs).process(batch)
    assert [o.message_id for o in outcomes] == [r.message_id for r in batch]
    reasons = {o.message_id: o.dead_letter.reason for o in outcomes if isinstance(o, Rejected)}
    assert reasons == {
        "missing": "blob_unavailable",
        "wrong-key": "blob_unavailable",
        "not-dicom": "not_dicom",
        "broken": "undecodable_pixels",
        "no-pixels": "no_pixel_data",
    }
    assert isinstance(outcomes[1], Decided) and outcomes[1].decision.rule == "chest-normal"
    assert len(classifier.calls) == 1 and len(classifier.calls[0]) == 1

    letter = outcomes[0].dead_letter
    assert (letter.source, letter.message_id, letter.peer, letter.received_at) == (
        "worker",
        "missing",
        missing.peer,
        missing.received_at,
    )
    assert DicomRecord.from_json(letter.raw) == missing  # the claim check, not the (large) dataset
    assert [m.topic for m in messages_for(outcomes[0])] == [DICOM_DEADLETTER, AUDIT_EVENTS]
    assert [m.topic for m in messages_for(outcomes[1])] == [ROUTING_DECISIONS] + [AUDIT_EVENTS] * 3


def test_a_failing_model_is_not_the_records_fault(blobs: BlobStore) -> None:
    class Broken(FakeImageClassifier):
        def predict(self, images: Sequence[np.ndarray]) -> list:
            raise RuntimeError("onnxruntime failed")

    with pytest.raises(RuntimeError, match="onnxruntime"):
        DicomFeed(Broken(), RULES, blobs).process([chest(blobs, "cxr")])


def test_read_rejects_what_is_not_a_record(blobs: BlobStore) -> None:
    record = chest(blobs, "cxr")
    feed = DicomFeed(None, RULES, blobs)
    assert feed.read(record.to_json()) == record
    for payload in (b"", b"[]", b'{"message_id": "x"}', b"\x00garbage", None):
        outcome = feed.read(payload)
        assert isinstance(outcome, Rejected) and outcome.dead_letter.reason == "unreadable_record"
        assert outcome.topic == DICOM_DEADLETTER


@pytest.fixture
def harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blobs: BlobStore
) -> tuple[faust.App, faust.types.AgentT, RecordingPublisher, FakeImageClassifier]:
    monkeypatch.setenv("MEDROUTE_HOME", str(tmp_path))
    app = create_app(KafkaSettings(bootstrap="127.0.0.1:1"), WorkerSettings(), store="memory://")
    classifier = FakeImageClassifier()
    publisher = RecordingPublisher()
    agent = install(app, DicomFeed(classifier, RULES, blobs), batch_size=8, batch_seconds=0.01, publisher=publisher)
    return app, agent, publisher, classifier


async def test_dicom_agent_one_decision_per_record_audit_without_phi_and_no_second_one(harness, blobs) -> None:
    app, agent, publisher, classifier = harness
    cxr, ct = stored(blobs, "RG1_UNCR.dcm", "d-cxr"), stored(blobs, "CT_small.dcm", "d-ct")
    lost = replace(stored(blobs, "CT_small.dcm", "d-lost"), blob="sha256:" + "1" * 64)
    async with agent.test_context() as context:
        for record in (cxr, ct, lost):
            await context.put(record.to_json(), key=record.study_uid.encode(), partition=2)
        await context.put(b"\x00not json", key=b"x", partition=0)
        await settle(publisher, 2)
        await settle(publisher, 2, DICOM_DEADLETTER)
        await context.put(cxr.to_json(), key=cxr.study_uid.encode(), partition=2)  # redelivered
        await asyncio.sleep(0.3)

    decisions = {d["message_id"]: d for d in publisher.on(ROUTING_DECISIONS)}
    assert sorted(decisions) == ["d-ct", "d-cxr"]
    assert (decisions["d-cxr"]["rule"], decisions["d-cxr"]["model"]) == ("chest-pneumonia", "fake-cxr@0.0.1")
    assert decisions["d-ct"]["rule"] == "images" and decisions["d-ct"]["_key"] == hash_id(ct.study_uid)
    assert decisions["d-ct"]["blob"] == ct.blob
    assert len(classifier.calls) == 1  # the redelivered chest image was not classified again
    letters = publisher.on(DICOM_DEADLETTER)
    assert sorted(letter["reason"] for letter in letters) == ["blob_unavailable", "unreadable_record"]

    table = app.tables[DICOM_TABLE_NAME]
    assert {table[k]["outcome"] for k in ("d-cxr", "d-ct", "d-lost")} == {"decision", "deadletter"}

    audit = publisher.on(AUDIT_EVENTS)
    actions = sorted((e["message_id"], e["action"]) for e in audit if e["message_id"].startswith("d-"))
    assert actions == [
        ("d-ct", "receive"),
        ("d-ct", "route"),
        ("d-cxr", "classify"),
        ("d-cxr", "receive"),
        ("d-cxr", "route"),
        ("d-lost", "reject"),
    ]
    classify = next(e for e in audit if e["action"] == "classify")
    assert classify["details"]["frame"] == 0 and classify["details"]["inverted"] is True
    receive = next(e for e in audit if e["message_id"] == "d-cxr" and e["action"] == "receive")
    assert receive["details"]["modality"] == "CR" and receive["details"]["message_type"] == "DICOM^CR"
    reject = next(e for e in audit if e["action"] == "reject" and e["message_id"] == "d-lost")
    assert reject["details"]["dead_letter_topic"] == DICOM_DEADLETTER
    text = json.dumps(audit)
    for record in (cxr, ct):
        for uid in (record.study_uid, record.series_uid, record.sop_instance_uid):
            assert uid and uid not in text
