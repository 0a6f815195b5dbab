"""The item behind a decision: the HL7 message's bytes (carried in the decision) or the DICOM Part-10 file
(read and decrypted from the blob store the decision names), with the fields a file name may use."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Protocol

import pydicom
from pydicom.errors import InvalidDicomError

from formats.hl7.message import read_lenient
from medroute.records import RoutingDecision
from medroute.sealing import BlobError
from pipeline.forward.errors import PermanentError, RetryableError


class BlobSource(Protocol):
    def get(self, reference: str) -> bytes: ...  # medroute.blobstore.Blobs


@dataclass(frozen=True)
class DicomMeta:
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    study_uid: str
    series_uid: str


@dataclass
class Item:
    decision: RoutingDecision
    data: bytes = field(repr=False)  # HL7: the message as received; DICOM: the Part-10 file as stored

    @property
    def kind(self) -> str:
        return self.decision.kind

    @property
    def message_id(self) -> str:
        return self.decision.message_id

    def decision_body(self) -> bytes:
        """The decision as JSON without the item's bytes, for receivers that asked for the decision."""
        data = self.decision.to_dict()
        data.pop("item", None)
        return json.dumps(data, separators=(",", ":")).encode()

    @cached_property
    def control_id(self) -> str:
        """MSH-10 (HL7 only): what the receiver's ACK must name in MSA-2."""
        return read_lenient(self.data.decode("latin-1")).header.control_id if self.kind == "hl7" else ""

    @cached_property
    def dicom(self) -> DicomMeta:
        try:
            ds = pydicom.dcmread(io.BytesIO(self.data), stop_before_pixels=True)
            meta = ds.file_meta
            return DicomMeta(
                str(meta.MediaStorageSOPClassUID),
                str(meta.MediaStorageSOPInstanceUID),
                str(meta.TransferSyntaxUID),
                str(ds.get("StudyInstanceUID", "")),
                str(ds.get("SeriesInstanceUID", "")),
            )
        except (InvalidDicomError, AttributeError, ValueError, EOFError) as exc:
            raise PermanentError("not_dicom", f"the stored dataset cannot be read: {type(exc).__name__}") from None

    def name_fields(self) -> dict[str, str]:
        """What a folder destination's file name pattern may use."""
        fields = {
            "message_id": self.message_id,
            "kind": self.kind,
            "label": self.decision.label or "none",
            "rule": self.decision.rule,
            "message_type": self.decision.message_type.replace("^", "_"),
            "date": datetime.now(UTC).strftime("%Y%m%d"),
            "ext": "hl7" if self.kind == "hl7" else "dcm",
        }
        if self.kind == "hl7":
            fields["control_id"] = self.control_id
        else:
            meta = self.dicom
            fields.update(
                sop_instance_uid=meta.sop_instance_uid, study_uid=meta.study_uid, series_uid=meta.series_uid
            )
        return fields


class ItemSource:
    """Finds the item of a decision; the blob store is read in a thread (disk or S3, then AES-GCM)."""

    def __init__(self, blobs: BlobSource | None) -> None:
        self._blobs = blobs

    async def item(self, decision: RoutingDecision) -> Item:
        if decision.kind == "hl7":
            if decision.item is None:
                raise PermanentError("item_missing", "the decision carries no HL7 message")
            return Item(decision, decision.item)
        if not decision.blob:
            raise PermanentError("item_missing", "the decision names no blob")
        if self._blobs is None:
            raise PermanentError("no_blob_store", "this forwarder has no blob store configured")
        try:
            data = await asyncio.to_thread(self._blobs.get, decision.blob)
        except BlobError as exc:
            # A store that cannot be read now (disk, S3) may be readable later; a missing or altered blob not.
            if str(exc).startswith("cannot"):
                raise RetryableError("blob_store_unavailable", str(exc)) from None
            raise PermanentError("blob_unreadable", str(exc)) from None
        return Item(decision, data)
