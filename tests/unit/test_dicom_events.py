"""The records the DICOM listener writes: inbound record, audit events, dead letters."""

from __future__ import annotations

import io
import json

import pydicom
from pydicom.dataset import FileMetaDataset
from pynetdicom.dsutils import encode_file_meta

from listeners.dicom.dataset import DatasetHeader
from listeners.dicom.events import Receipt, dead_letter, inbound_record, reject_audit
from listeners.dicom.part10 import as_file, file_meta
from medroute.logs import hash_id
from medroute.records import DeadLetter, DicomRecord

HEADER = DatasetHeader(
    sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
    sop_instance_uid="1.2.3.4.5.6.7",
    study_uid="1.2.3.4.5",
    series_uid="1.2.3.4.5.6",
    modality="CR",
    body_part="CHEST",
    view_position="PA",
    study_description="THORAX",
    series_description="Chest PA",
)
RECEIPT = Receipt(
    calling_ae="CR_ROOM_3",
    called_ae="MEDROUTE",
    peer="10.1.2.3:40112",
    transfer_syntax="1.2.840.10008.1.2.4.90",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
    sop_instance_uid="1.2.3.4.5.6.7",
    received_at="2026-11-28T10:00:00.000000+00:00",
)


def test_inbound_record_has_every_field() -> None:
    record = inbound_record(HEADER, RECEIPT, "sha256:" + "ab" * 32, 7_200_056)
    assert DicomRecord.from_json(record.to_json()) == record
    assert (record.study_uid, record.series_uid) == ("1.2.3.4.5", "1.2.3.4.5.6")
    assert record.sop_instance_uid == "1.2.3.4.5.6.7"
    assert record.sop_class_uid == "1.2.840.10008.5.1.4.1.1.1"
    assert (record.modality, record.body_part, record.view_position) == ("CR", "CHEST", "PA")
    assert (record.study_description, record.series_description) == ("THORAX", "Chest PA")
    assert record.transfer_syntax == "1.2.840.10008.1.2.4.90"
    assert (record.size, record.blob) == (7_200_056, "sha256:" + "ab" * 32)
    assert (record.calling_ae, record.called_ae, record.peer) == ("CR_ROOM_3", "MEDROUTE", "10.1.2.3:40112")
    assert record.received_at == RECEIPT.received_at
    assert record.kind == "dicom" and len(record.message_id) == 32
    assert inbound_record(HEADER, RECEIPT, record.blob, 1).message_id != record.message_id  # one per receipt


def test_dead_letter_keeps_small_payloads_whole_and_cuts_big_ones() -> None:
    whole = dead_letter(RECEIPT, "not_dicom", "not a DICOM dataset", b"x" * 100, max_raw=1000)
    assert (whole.raw, whole.detail) == (b"x" * 100, "not a DICOM dataset")
    assert (whole.source, whole.peer) == ("dicom", RECEIPT.peer)
    cut = dead_letter(RECEIPT, "kafka_unavailable", "storage unavailable", b"y" * 5000, max_raw=1000)
    assert cut.raw == b"y" * 1000
    assert "cut to the first 1000 of 5000 bytes" in cut.detail
    assert DeadLetter.from_json(cut.to_json()) == cut


def test_reject_audit() -> None:
    dead = dead_letter(RECEIPT, "truncated", "the dataset ends inside an element", b"z", max_raw=10)
    audit = reject_audit(RECEIPT, dead, 0xC001, 12345)
    assert (audit.action, audit.actor, audit.message_id) == ("reject", "listener.dicom", dead.message_id)
    assert audit.details["status"] == "0xC001" and audit.details["reason"] == "truncated"
    assert audit.details["sop_instance"] == hash_id("1.2.3.4.5.6.7")
    assert "1.2.3.4.5.6.7" not in json.dumps(audit.to_dict())


def test_file_meta_reads_back_as_pydicom_and_pynetdicom_write_it() -> None:
    dataset = b"\x08\x00\x16\x00UI\x1a\x001.2.840.10008.5.1.4.1.1.1\x00"
    data = as_file(file_meta("1.2.840.10008.5.1.4.1.1.1", "1.2.3.44", "1.2.840.10008.1.2.4.90", "CR_1"), dataset)
    read = pydicom.dcmread(io.BytesIO(data))
    meta = read.file_meta
    assert (meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID) == ("1.2.840.10008.5.1.4.1.1.1", "1.2.3.44")
    assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90" and meta.SourceApplicationEntityTitle == "CR_1"
    assert data.endswith(dataset)
    reference = FileMetaDataset()
    for element in meta:
        if element.tag.element != 0:
            reference.add(element)
    assert file_meta("1.2.840.10008.5.1.4.1.1.1", "1.2.3.44", "1.2.840.10008.1.2.4.90", "CR_1") == encode_file_meta(
        reference
    )
