"""The DICOM listener as a real process, with real Kafka, against DCMTK and pynetdicom as senders.

Every instance a sender saw succeed is on ``dicom.inbound`` with its metadata, and its blob decrypts
to the dataset that was sent; everything refused got a failure status and (where Kafka is up) a dead
letter; nothing gets 0x0000 that is not stored.
"""

from __future__ import annotations

import base64
import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from medroute.blobstore import BlobStore
from medroute.config import AUDIT_EVENTS, DICOM_DEADLETTER, DICOM_INBOUND, KafkaSettings
from medroute.ports import free_port
from medroute.records import utc_now
from tests.integration.conftest import RunningDicomListener, start_dicom_listener
from tests.integration.dicom_peers import (
    PYSCU,
    STORESCU,
    association,
    contexts,
    contexts_of_files,
    echoscu,
    part10_with_dataset,
    renumbered_copies,
    same_content,
    sample_file,
    sending_files_as_they_are,
    split_part10,
    storescu,
    transfer_syntax_of,
)
from tests.integration.topic_reading import dead_letter_since, read_topic_sync

# One storescu association per group: storescu proposes one compressed transfer syntax per run.
STORESCU_GROUPS = [
    ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "RG1_UNCR.dcm"],  # explicit LE; multi-frame; 7 MB CR
    ["MR_small_implicit.dcm"],
    ["SC_rgb_jpeg_dcmtk.dcm"],  # JPEG baseline
    ["JPGExtended.dcm"],  # JPEG extended
    ["JPEG-LL.dcm"],  # JPEG lossless
    ["MR_small_jpeg_ls_lossless.dcm"],  # JPEG-LS
    ["US1_J2KR.dcm", "RG1_J2KR.dcm"],  # JPEG 2000 lossless, 4 MB CR
    ["JPEG2000.dcm"],  # JPEG 2000
    ["MR_small_RLE.dcm"],  # RLE
    ["image_dfl.dcm"],  # deflated explicit LE
]
CT_EXPLICIT = contexts([CTImageStorage, Verification], [ExplicitVRLittleEndian])
# Sent byte for byte by pynetdicom, so the blob must hold exactly these dataset bytes.
EXACT_FILES = ["CT_small.dcm", "RG1_UNCR.dcm", "emri_small_jpeg_2k_lossless.dcm", "MR_small_RLE.dcm", "image_dfl.dcm"]


def _sop_instance(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _records_since(
    kafka: KafkaSettings, topic: str, since: str, wanted: set[str], field: str = "sop_instance_uid", timeout: float = 60
) -> dict[str, dict[str, Any]]:
    """The newest record per ``field`` value in ``wanted`` received after ``since``."""

    def newer(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        stamp = "received_at" if topic != AUDIT_EVENTS else "at"
        return {r[field]: r for r in records if r.get(stamp, "") >= since and r.get(field) in wanted}

    records = read_topic_sync(kafka, topic, until=lambda rs: wanted <= set(newer(rs)), timeout=timeout)
    return newer(records)


def _blobs(listener: RunningDicomListener) -> BlobStore:
    return BlobStore(listener.blob_dir, listener.blob_key)


def test_storescu_every_transfer_syntax_is_stored_with_its_record_and_blob(
    kafka: KafkaSettings, dicom_listener: RunningDicomListener
) -> None:
    since = utc_now()
    sent: dict[str, Path] = {}
    for group in STORESCU_GROUPS:
        files = [sample_file(name) for name in group]
        result = storescu(dicom_listener.port, files)
        assert result.returncode == 0, result.stderr
        sent.update({_sop_instance(path): path for path in files})

    stored = _records_since(kafka, DICOM_INBOUND, since, set(sent))
    assert set(stored) == set(sent)
    blobs = _blobs(dicom_listener)
    for uid, record in stored.items():
        path = sent[uid]
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert record["_key"] == ds.StudyInstanceUID
        assert record["study_uid"] == ds.StudyInstanceUID
        assert record["series_uid"] == ds.SeriesInstanceUID
        assert record["sop_class_uid"] == ds.SOPClassUID
        assert record["modality"] == ds.get("Modality", "")
        assert record["transfer_syntax"] == transfer_syntax_of(path), path.name  # stored as sent, not transcoded
        assert (record["calling_ae"], record["called_ae"]) == (STORESCU, "MEDROUTE")
        assert record["peer"].startswith("127.0.0.1:")
        data = blobs.get(record["blob"])
        assert record["size"] == len(data)
        assert same_content(data, path), path.name
    chest = stored[_sop_instance(sample_file("RG1_UNCR.dcm"))]
    assert (chest["body_part"], chest["view_position"], chest["study_description"]) == ("CHEST", "PA", "THORAX")



def test_pynetdicom_sends_are_stored_byte_for_byte(kafka: KafkaSettings, dicom_listener: RunningDicomListener) -> None:
    since = utc_now()
    files = [sample_file(name) for name in EXACT_FILES]
    metas = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    with sending_files_as_they_are(), association(dicom_listener.port, contexts_of_files(files)) as assoc:
        assert assoc.is_established
        statuses = [assoc.send_c_store(path).Status for path in files]
    assert statuses == [0x0000] * len(files)

    stored = _records_since(kafka, DICOM_INBOUND, since, {str(m.SOPInstanceUID) for m in metas})
    blobs = _blobs(dicom_listener)
    for path, meta in zip(files, metas, strict=True):
        record = stored[str(meta.SOPInstanceUID)]
        assert record["calling_ae"] == PYSCU
        header, dataset = split_part10(blobs.get(record["blob"]))
        assert dataset == split_part10(path.read_bytes())[1], path.name
        assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID in header.decode("latin-1")


def test_echo_and_unknown_calling_ae(dicom_listener: RunningDicomListener) -> None:
    result = echoscu(dicom_listener.port)
    assert result.returncode == 0, result.stderr
    with association(dicom_listener.port, contexts([Verification], [ExplicitVRLittleEndian])) as assoc:
        assert assoc.send_c_echo().Status == 0x0000

    refused = echoscu(dicom_listener.port, calling="INTRUDER")
    assert refused.returncode != 0
    assert "reject" in (refused.stdout + refused.stderr).lower()
    with association(dicom_listener.port, CT_EXPLICIT, calling="INTRUDER") as assoc:
        assert assoc.is_rejected
    result = storescu(dicom_listener.port, [sample_file("CT_small.dcm")], "INTRUDER")
    assert result.returncode != 0


@pytest.mark.parametrize(
    ("name", "cut", "status", "reason"),
    [
        ("garbage", None, 0xC000, "not_dicom"),
        ("truncated", 1000, 0xC001, "truncated"),
    ],
)
def test_bad_datasets_get_a_failure_status_and_a_dead_letter(
    kafka: KafkaSettings,
    dicom_listener: RunningDicomListener,
    tmp_path: Path,
    name: str,
    cut: int | None,
    status: int,
    reason: str,
) -> None:
    template = sample_file("CT_small.dcm")
    if cut is None:
        body = b"this is not a DICOM dataset, only some text " * 40
    else:
        body = split_part10(template.read_bytes())[1][:-cut]  # cut short inside the pixel data
    path = part10_with_dataset(tmp_path / f"{name}.dcm", template, body)
    since = utc_now()
    with sending_files_as_they_are(), association(dicom_listener.port, CT_EXPLICIT) as a:
        answer = a.send_c_store(path)
        assert answer.Status == status
        assert answer.ErrorComment
        assert a.send_c_echo().Status == 0x0000  # the association and the listener carry on

    letter = dead_letter_since(kafka, DICOM_DEADLETTER, since, reason)
    assert letter is not None
    assert letter["source"] == "dicom" and letter["detail"]
    assert base64.b64decode(letter["raw"]).endswith(body)
    assert (dicom_listener.process.process and dicom_listener.process.process.poll()) is None


def test_unwritable_blob_store_is_out_of_resources_and_dead_lettered(kafka: KafkaSettings, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("a file where the blob directory's parent should be")
    listener = start_dicom_listener(kafka.bootstrap_servers, str(tmp_path), blob_dir=str(tmp_path / "a-file" / "blobs"))
    since = utc_now()
    try:
        with association(listener.port, CT_EXPLICIT) as assoc:
            answer = assoc.send_c_store(sample_file("CT_small.dcm"))
        assert answer.Status == 0xA700
        assert "blob" in answer.ErrorComment
        assert dead_letter_since(kafka, DICOM_DEADLETTER, since, "blob_store_unavailable") is not None
    finally:
        listener.process.stop()
    assert "dicom.instance_refused" in listener.process.log()
    assert _sop_instance(sample_file("CT_small.dcm")) not in listener.process.log()  # no UIDs in logs


def test_kafka_unreachable_never_reports_success(tmp_path: Path) -> None:
    closed = f"127.0.0.1:{free_port()}"
    listener = start_dicom_listener(closed, str(tmp_path), MEDROUTE_DICOM_STORE_TIMEOUT="2")
    try:
        files = [sample_file(name) for name in ("CT_small.dcm", "MR_small.dcm")]
        with association(listener.port, contexts_of_files(files)) as assoc:
            answers = [assoc.send_c_store(path) for path in files]
        assert [a.Status for a in answers] == [0xA700, 0xA700]
        assert all("unavailable" in a.ErrorComment for a in answers)
        result = storescu(listener.port, files)
        assert result.returncode != 0 or "Success" not in result.stdout + result.stderr
    finally:
        listener.process.stop()


def test_kill9_mid_association_loses_no_acknowledged_instance(kafka: KafkaSettings, tmp_path: Path) -> None:
    files = renumbered_copies(sample_file("CT_small.dcm"), tmp_path / "study", 80)
    listener = start_dicom_listener(kafka.bootstrap_servers, str(tmp_path / "home"))
    acknowledged: list[str] = []
    answered = threading.Event()

    def send() -> None:
        with association(listener.port, CT_EXPLICIT) as assoc:
            for path in files:
                if not assoc.is_established:
                    return
                answer = assoc.send_c_store(path)
                if answer.get("Status") == 0x0000:
                    acknowledged.append(_sop_instance(path))
                    if len(acknowledged) >= 15:
                        answered.set()
                else:
                    return

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert answered.wait(60), "the sender made no progress"
        listener.process.kill9()
        sender.join(60)
    finally:
        listener.process.stop()
    assert 15 <= len(acknowledged) < len(files), "the kill did not land mid-association"
    stored = _records_since(kafka, DICOM_INBOUND, "", set(acknowledged))
    assert set(acknowledged) <= set(stored)
    blobs = _blobs(listener)
    for uid in acknowledged:
        assert split_part10(blobs.get(stored[uid]["blob"]))[1]


def test_listener_logs_carry_no_identifiers(dicom_listener: RunningDicomListener) -> None:
    files = [sample_file("CT_small.dcm"), sample_file("MR_small.dcm")]
    assert storescu(dicom_listener.port, files).returncode == 0
    deadline = time.monotonic() + 10
    while dicom_listener.process.log().count("dicom.instance_stored") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    log = dicom_listener.process.log()
    assert "dicom.instance_stored" in log
    for name in ("CT_small.dcm", "MR_small.dcm"):
        ds = pydicom.dcmread(sample_file(name), stop_before_pixels=True)
        assert ds.StudyInstanceUID not in log and ds.SOPInstanceUID not in log


def _established_per_process(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections on local ``port`` each process holds (what ``ss -tnp`` shows)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    held = {}
    for pid in pids:
        links = [os.readlink(entry) for entry in Path(f"/proc/{pid}/fd").iterdir()]
        held[pid] = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
    return held


def test_processes_take_associations_by_load(kafka: KafkaSettings, tmp_path: Path) -> None:
    # Two processes, four associations open at once: two each, by load (SO_REUSEPORT's hash of the peer
    # port gave 3 + 1 or 4 + 0 in 5 of 8 runs); and each process stores what it was given.
    listener = start_dicom_listener(
        kafka.bootstrap_servers, str(tmp_path), MEDROUTE_DICOM_PROCESSES="2", MEDROUTE_DICOM_ALLOWED_AES=PYSCU
    )
    try:
        parent = listener.process.process.pid
        siblings = [int(pid) for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
        with contextlib.ExitStack() as stack:
            associations = [stack.enter_context(association(listener.port, CT_EXPLICIT)) for _ in range(4)]
            assert all(assoc.is_established for assoc in associations)
            held = _established_per_process([parent, *siblings], listener.port)
            assert sorted(count for count in held.values() if count) == [2, 2], held
            copies = renumbered_copies(sample_file("CT_small.dcm"), tmp_path / "copies", len(associations))
            statuses = [assoc.send_c_store(path).Status for assoc, path in zip(associations, copies, strict=True)]
        assert statuses == [0x0000] * len(associations)
    finally:
        listener.process.stop()
