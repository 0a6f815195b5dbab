"""``medroute replay --topic dicom.inbound``: images read again from the blob store and reclassified by an
image model version, with the same transactions, checkpoints and diff as HL7 replays."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from pydicom.data import get_testdata_file

from medroute.blobstore import BlobStore
from medroute.config import DICOM_INBOUND, KafkaSettings
from medroute.records import DicomRecord
from shell.broker import LocalBroker
from tests.integration.test_replay import replay_decisions, run_replay
from tests.integration.test_worker_dicom import produce
from tests.unit.test_pipeline_support import build_tiny_image_bundle, dicom_record

BLOB_KEY = bytes(range(32))
MODEL = "cxr-pneumonia@0.0.1-test"  # the tiny real ONNX bundle of the unit tests: P(pneumonia) = brightness


def test_dicom_inbound_is_replayed_through_the_image_model_from_the_blob_store(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    kafka = KafkaSettings(bootstrap=own_broker.bootstrap)
    blobs = BlobStore(tmp_path / "blobs", BLOB_KEY)
    models = tmp_path / "models"
    build_tiny_image_bundle(models / "cxr-pneumonia")
    run = uuid.uuid4().hex[:8]

    def stored(name: str, suffix: str, **overrides: str) -> DicomRecord:
        data = Path(get_testdata_file(name)).read_bytes()
        return dicom_record(data, blobs.put(data), f"{run}-{suffix}", **overrides)

    cxr = stored("RG1_UNCR.dcm", "cxr")  # CR, CHEST, PA: the image model's
    ct = stored("CT_small.dcm", "ct")  # decided on its metadata
    lost = stored("MR_small.dcm", "lost")  # its blob is gone by the time of the replay
    produce(kafka, [cxr, ct, lost])
    blobs.path_of(lost.blob).unlink()

    replay_id = f"d{run}"
    stdout = run_replay(
        kafka, models, tmp_path, "--topic", DICOM_INBOUND, "--from", "beginning", "--to", "end",
        "--model", MODEL, "--replay-id", replay_id, "--no-progress",
        env={"MEDROUTE_BLOB_DIR": str(blobs.root), "MEDROUTE_BLOB_KEY": BLOB_KEY.hex()},
    )  # fmt: skip
    decisions = {d["message_id"]: d for d in replay_decisions(kafka, replay_id)}
    assert set(decisions) == {cxr.message_id, ct.message_id}
    image = decisions[cxr.message_id]
    assert image["model"] == MODEL and image["label"] in ("normal", "pneumonia") and image["kind"] == "dicom"
    assert image["source_offset"].startswith(f"{DICOM_INBOUND}:")
    metadata = decisions[ct.message_id]
    assert (metadata["model"], metadata["message_type"], metadata["rule"]) == (None, "DICOM^CT", "images")
    match = re.search(r"done, (\d+) decided, (\d+) not decidable", stdout)
    assert match, stdout
    assert match.groups() == ("2", "1") and "blob_unavailable 1" in stdout

    # No live decisions on this broker: the diff compares nothing and finds both replayed ones missing live.
    diff = run_replay(kafka, models, tmp_path, "diff", replay_id)
    assert "replayed 2, live 0, compared 0" in diff and "no live decision 2" in diff, diff
