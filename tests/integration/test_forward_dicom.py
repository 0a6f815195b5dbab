"""Forwarding DICOM to real PACSs this project did not write: Orthanc (checked through its REST API) and DCMTK
storescp (bit-preserving). Datasets come from the encrypted blob store, as the listener stored them."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from medroute.blobstore import BlobStore
from medroute.config import KafkaSettings
from tests.integration.conftest import DICOM_TEST_BLOB_KEY, RunningDicomListener
from tests.integration.dicom_peers import renumbered_copies, sample_file, split_part10, storescu
from tests.integration.forward_peers import (
    Orthanc,
    StoreScp,
    dicom_decision,
    publish_sync,
    start_forwarder,
    wait_until,
)
from tests.integration.processes import ChildProcess

# Uncompressed, JPEG 2000 lossless, RLE and JPEG baseline (four SOP Instance UIDs): Orthanc takes each as it is;
# storescp (without +xa) only uncompressed syntaxes, so the compressed ones reach it decompressed.
FILES = ["CT_small.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm"]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


def orthanc_instances(orthanc: Orthanc) -> dict[str, str]:
    """SOP Instance UID -> Orthanc's instance id."""
    found = {}
    for orthanc_id in orthanc.json("/instances"):
        tags = orthanc.json(f"/instances/{orthanc_id}/simplified-tags")
        found[tags["SOPInstanceUID"]] = orthanc_id
    return found


def test_images_go_to_orthanc_and_storescp_as_received_or_decompressed(
    kafka: KafkaSettings, orthanc: Orthanc, tmp_path: Path
) -> None:
    storescp = StoreScp(tmp_path / "storescp").start()
    blobs = BlobStore(tmp_path / "blobs", DICOM_TEST_BLOB_KEY)
    tag = uuid.uuid4().hex[:8]
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text(
        f"destinations:\n"
        f"  pacs-{tag}: {{type: dicom, host: 127.0.0.1, port: {orthanc.dicom_port}, called_ae: ORTHANC}}\n"
        # storescp serves one association at a time
        f"  archive-{tag}: {{type: dicom, host: 127.0.0.1, port: {storescp.port}, called_ae: STORESCP, "
        "concurrency: 1}\n"
    )
    files = [sample_file(name) for name in FILES]
    forwarder = start_forwarder(kafka, tmp_path, destinations)
    try:
        publish_sync(kafka, [dicom_decision(path, blobs, [f"pacs-{tag}", f"archive-{tag}"]) for path in files])
        originals = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in files}
        assert wait_until(lambda: set(originals) <= set(orthanc_instances(orthanc)), 60), forwarder.log()[-3000:]
        assert wait_until(lambda: len(storescp.files()) >= len(files), 60), forwarder.log()[-3000:]
    finally:
        forwarder.stop()
        storescp.stop()
    in_orthanc = orthanc_instances(orthanc)
    for uid, path in originals.items():
        sent = pydicom.dcmread(path)
        stored = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{in_orthanc[uid]}/file")))
        assert stored.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID  # Orthanc took each as it was
        assert stored.PixelData == sent.PixelData, path.name
    archived = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in storescp.files()}
    assert set(archived) == set(originals) and len(storescp.files()) == len(files)
    for uid, path in originals.items():
        sent = pydicom.dcmread(path)
        if not sent.file_meta.TransferSyntaxUID.is_compressed:  # byte for byte what medroute received
            assert split_part10(archived[uid].read_bytes())[1] == split_part10(path.read_bytes())[1], path.name
        else:  # decompressed for a receiver that takes no compressed syntax: the same pixels
            got = pydicom.dcmread(archived[uid])
            assert not got.file_meta.TransferSyntaxUID.is_compressed
            assert (got.pixel_array == sent.pixel_array).all(), path.name


@pytest.fixture
def image_worker(kafka: KafkaSettings, dicom_listener: RunningDicomListener, tmp_path: Path) -> Iterator[ChildProcess]:
    """A worker reading the listener's blobs (metadata-only image decisions: no model to load)."""
    child = ChildProcess(
        "pipeline",
        {
            "MEDROUTE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
            "MEDROUTE_HOME": str(tmp_path / "worker"),
            "MEDROUTE_BLOB_DIR": str(dicom_listener.blob_dir),
            "MEDROUTE_BLOB_KEY": dicom_listener.blob_key.hex(),
            "MEDROUTE_IMAGE_MODEL": "none",
            "MEDROUTE_WORKER_APP_ID": "medroute-worker-forward-e2e",
        },
        log_path=tmp_path / "worker.log",
    ).start()
    yield child
    child.stop(timeout=30)


def test_images_sent_to_medroute_arrive_in_orthanc(
    kafka: KafkaSettings, orthanc: Orthanc, dicom_listener: RunningDicomListener, image_worker: ChildProcess,
    tmp_path: Path,
) -> None:
    """The whole way: storescu -> DICOM listener -> worker (rules: images -> pacs) -> forwarder -> Orthanc."""
    files = renumbered_copies(sample_file("CT_small.dcm"), tmp_path / "ct", 5)
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text(
        f"destinations:\n  pacs: {{type: dicom, host: 127.0.0.1, port: {orthanc.dicom_port}, called_ae: ORTHANC}}\n"
    )
    forwarder = start_forwarder(kafka, tmp_path, destinations, MEDROUTE_BLOB_DIR=str(dicom_listener.blob_dir))
    try:
        result = storescu(dicom_listener.port, files)
        assert result.returncode == 0, result.stderr
        uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
        arrived = wait_until(lambda: uids <= set(orthanc_instances(orthanc)), 120)
        assert arrived, forwarder.log()[-2000:] + image_worker.log()[-2000:]
    finally:
        forwarder.stop()
