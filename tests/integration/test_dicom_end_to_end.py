"""From a DCMTK sender to a routing decision: storescu -> DICOM listener -> dicom.inbound + blob store ->
worker (image model for chest radiographs, metadata for the rest) -> routing.decisions + audit.events.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from medroute.config import AUDIT_EVENTS, DICOM_INBOUND, ROUTING_DECISIONS, KafkaSettings
from tests.integration.conftest import RunningDicomListener
from tests.integration.dicom_peers import STORESCU, STORESCU_PROPOSE, sample_file, storescu
from tests.integration.processes import ChildProcess
from tests.integration.topic_reading import read_topic_sync

CHEST_PA = ("RG1_UNCR.dcm", "RG1_J2KR.dcm")  # the same chest PA radiograph, uncompressed and JPEG 2000
OTHERS = ("RG3_UNCR.dcm", "CT_small.dcm")  # an extremity radiograph and a CT: decided on metadata


@pytest.fixture(scope="module")
def image_worker(
    kafka: KafkaSettings, dicom_listener: RunningDicomListener, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChildProcess]:
    home = tmp_path_factory.mktemp("image-worker")
    child = ChildProcess(
        "pipeline",
        {
            "MEDROUTE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
            "MEDROUTE_HOME": str(home),
            "MEDROUTE_BLOB_DIR": str(dicom_listener.blob_dir),
            "MEDROUTE_BLOB_KEY": dicom_listener.blob_key.hex(),
            "MEDROUTE_BATCH_MS": "50",
            # A group of its own: the workers of later modules must not start in a rebalance with it.
            "MEDROUTE_WORKER_APP_ID": "medroute-worker-dicom-e2e",
        },
        log_path=home / "worker.log",
    ).start()
    yield child
    child.stop(timeout=30)


def test_images_sent_by_storescu_get_decisions_from_the_chest_model_or_their_metadata(
    kafka: KafkaSettings, dicom_listener: RunningDicomListener, image_worker: ChildProcess
) -> None:
    files = {name: sample_file(name) for name in (*CHEST_PA, *OTHERS)}
    for name, path in files.items():
        offer = STORESCU_PROPOSE.get(_syntax_of(name))  # storescu offers compressed syntaxes only when told
        sent = storescu(dicom_listener.port, [path], STORESCU, *([offer] if offer else []))
        assert sent.returncode == 0, f"{name}: {sent.stderr[-2000:]}"

    # storescu resends the same instances on every run: match this run's receipts by their new ids.
    sop_of = {name: _sop_instance(path) for name, path in files.items()}
    events = read_topic_sync(
        kafka, DICOM_INBOUND, until=lambda found: _latest(found, sop_of).keys() == sop_of.keys(), timeout=60
    )
    receipt = _latest(events, sop_of)
    ids = {name: event["message_id"] for name, event in receipt.items()}

    decisions = read_topic_sync(
        kafka, ROUTING_DECISIONS, until=lambda found: {d["message_id"] for d in found} >= set(ids.values()), timeout=120
    )
    by_name = {name: next(d for d in decisions if d["message_id"] == ids[name]) for name in ids}
    for name in CHEST_PA:
        decision = by_name[name]
        assert decision["kind"] == "dicom" and decision["message_type"] == "DICOM^CR", decision
        assert decision["model"] == "cxr-pneumonia@1.0.0", image_worker.log()[-3000:]
        assert decision["label"] in {"normal", "pneumonia"} and 0.5 <= decision["confidence"] <= 1.0
        assert "pacs" in decision["destinations"]
    # Lossless JPEG 2000 decodes to the same pixels: the same answer for the same radiograph.
    uncompressed, j2k = (by_name[name] for name in CHEST_PA)
    assert (j2k["label"], j2k["confidence"]) == pytest.approx((uncompressed["label"], uncompressed["confidence"]))
    for name in OTHERS:
        decision = by_name[name]
        assert (decision["model"], decision["label"], decision["rule"]) == (None, None, "images"), decision
        assert decision["destinations"] == ["pacs"]

    audit = read_topic_sync(
        kafka,
        AUDIT_EVENTS,
        until=lambda found: sum(e["message_id"] in ids.values() and e["action"] == "route" for e in found) >= 4,
        timeout=60,
    )
    classified = {e["message_id"] for e in audit if e["action"] == "classify" and e["message_id"] in ids.values()}
    assert classified == {ids[name] for name in CHEST_PA}
    ours = [json.dumps(e) for e in audit if e["message_id"] in ids.values()]
    assert not [text for text in ours for sop in sop_of.values() if sop in text]  # UIDs only as hashes


def _sop_instance(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _latest(events: list[dict], sop_of: dict[str, str]) -> dict[str, dict]:
    """The last receipt of each file's instance (two names may share one instance: RG1 in two syntaxes)."""
    found: dict[str, dict] = {}
    for event in events:
        for name, sop in sop_of.items():
            if event.get("sop_instance_uid") == sop and event.get("transfer_syntax") == _syntax_of(name):
                found[name] = event
    return found


def _syntax_of(name: str) -> str:
    import pydicom

    return str(pydicom.dcmread(sample_file(name), stop_before_pixels=True).file_meta.TransferSyntaxUID)
