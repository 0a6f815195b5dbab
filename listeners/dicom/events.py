"""The records the DICOM listener writes: the inbound record, its audit events, and dead letters.

Pure functions of what was received, so they are unit-tested without a network. Audit events carry
no PHI: UIDs and AE titles appear only as :func:`medroute.logs.hash_id` hashes.
"""

from __future__ import annotations

from dataclasses import dataclass

from listeners.dicom.dataset import DatasetHeader, read_header
from listeners.dicom.part10 import split_file
from medroute.logs import hash_id
from medroute.records import AuditEvent, DeadLetter, DicomRecord, new_id, utc_now

SOURCE = "dicom"
ACTOR = "listener.dicom"


@dataclass(frozen=True)
class Receipt:
    """Who sent a C-STORE, and how: known before the dataset is looked at."""

    calling_ae: str
    called_ae: str
    peer: str  # "host:port"
    transfer_syntax: str
    sop_class_uid: str  # from the C-STORE command
    sop_instance_uid: str  # from the C-STORE command
    received_at: str


def inbound_record(header: DatasetHeader, receipt: Receipt, blob: str, size: int) -> DicomRecord:
    """The ``dicom.inbound`` record of a stored instance (``size``: bytes of the stored Part-10 file)."""
    return DicomRecord(
        message_id=new_id(),
        study_uid=header.study_uid,
        series_uid=header.series_uid,
        sop_instance_uid=header.sop_instance_uid,
        sop_class_uid=header.sop_class_uid,
        modality=header.modality,
        body_part=header.body_part,
        view_position=header.view_position,
        study_description=header.study_description,
        series_description=header.series_description,
        transfer_syntax=receipt.transfer_syntax,
        size=size,
        blob=blob,
        calling_ae=receipt.calling_ae,
        called_ae=receipt.called_ae,
        peer=receipt.peer,
        received_at=receipt.received_at,
    )



def file_record(data: bytes, blob: str, peer: str) -> DicomRecord:
    """The record the listener would write for a Part-10 file (an upload, a benchmark's image), after the
    same structural checks; raises :class:`~listeners.dicom.dataset.DatasetError`."""
    transfer_syntax, dataset = split_file(data)
    header = read_header(dataset, transfer_syntax)
    receipt = Receipt("", "", peer, transfer_syntax, header.sop_class_uid, header.sop_instance_uid, utc_now())
    return inbound_record(header, receipt, blob, len(data))

def dead_letter(receipt: Receipt, reason: str, detail: str, raw: bytes, max_raw: int) -> DeadLetter:
    """A refused instance with (at most ``max_raw`` of) the bytes received; the detail says when cut."""
    if len(raw) > max_raw:
        detail = f"{detail} [raw cut to the first {max_raw} of {len(raw)} bytes]"
        raw = raw[:max_raw]
    return DeadLetter(source=SOURCE, reason=reason, detail=detail, raw=raw, peer=receipt.peer)


def reject_audit(receipt: Receipt, dead: DeadLetter, status: int, size: int) -> AuditEvent:
    return AuditEvent(
        action="reject",
        actor=ACTOR,
        message_id=dead.message_id,
        details={
            "kind": "dicom",
            "reason": dead.reason,
            "status": f"0x{status:04X}",
            "sop_instance": hash_id(receipt.sop_instance_uid),
            "sop_class_uid": receipt.sop_class_uid,
            "transfer_syntax": receipt.transfer_syntax,
            "bytes": size,
            "calling_ae": hash_id(receipt.calling_ae),
            "peer": receipt.peer,
        },
    )
