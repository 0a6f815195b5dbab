"""The DICOM feed: fetch the blob, pick the model, decode, classify. Per record:

1. the blob is read from the blob store (decrypted, digest checked) and parsed as a DICOM file, for
   every record: an image routed to the PACS must exist and be DICOM;
2. the model is chosen from the record's metadata (:func:`wants_image_model`): a frontal chest
   radiograph goes to the image model; anything else is decided on its metadata alone;
3. images for the model are decoded (:mod:`pipeline.pixels`, the middle frame) and classified with the
   rest of the batch (:mod:`pipeline.feed`).

A record whose blob is missing or fails authentication, that is not DICOM, or whose pixels cannot
be decoded becomes a dead letter (its record JSON as ``raw``: the dataset stays in the blob store,
named by the record's ``blob``) and the batch goes on.
"""

from __future__ import annotations

import re
from typing import ClassVar, Protocol

import structlog
from pydicom.dataset import Dataset

from medroute.config import DICOM_INBOUND
from medroute.logs import hash_id
from medroute.records import DicomRecord
from medroute.sealing import BlobError
from pipeline.classify import Classification, Model
from pipeline.feed import Feed, Prepared
from pipeline.outcomes import Content, ImageSummary, Rejected
from pipeline.pixels import DisplayImage, ImageDecodeError, read_dataset, representative_image
from pipeline.routing import RouteFacts, Rules, dicom_facts

log = structlog.get_logger(__name__)

CHEST_MODALITIES = frozenset({"CR", "DX"})
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG"})
FRONTAL_VIEWS = frozenset({"", "PA", "AP"})  # (0018,5101) View Position; often empty on CR
_CHEST_WORDS = re.compile(r"\b(chest|thorax|lungs?|cxr)\b", re.IGNORECASE)
# A description that says lateral or decubitus is not the frontal view the model was trained on.
_NOT_FRONTAL_WORDS = re.compile(r"\b(lat|lateral|decub\w*)\b", re.IGNORECASE)


class BlobSource(Protocol):
    def get(self, reference: str) -> bytes: ...  # medroute.blobstore.Blobs


def wants_image_model(record: DicomRecord) -> bool:
    """A frontal chest radiograph: modality CR or DX, body part CHEST (or a study or series
    description that says chest, thorax, lung or CXR), view PA, AP or not given."""
    if record.modality.strip().upper() not in CHEST_MODALITIES:
        return False
    if record.view_position.strip().upper() not in FRONTAL_VIEWS:
        return False
    descriptions = (record.study_description, record.series_description)
    if not record.view_position.strip() and any(_NOT_FRONTAL_WORDS.search(text) for text in descriptions):
        return False
    return record.body_part.strip().upper() in CHEST_BODY_PARTS or any(
        _CHEST_WORDS.search(text) for text in descriptions
    )


def dicom_record_of(
    dataset: Dataset, *, message_id: str = "", blob: str = "", size: int = 0, peer: str = ""
) -> DicomRecord:
    """The record a dataset read from a file (not received over C-STORE) would have: its UIDs and the
    metadata the routing rules and :func:`wants_image_model` look at; no AE titles."""

    def text(keyword: str) -> str:
        return str(getattr(dataset, keyword, "") or "").strip()

    return DicomRecord(
        message_id=message_id,
        study_uid=text("StudyInstanceUID"),
        series_uid=text("SeriesInstanceUID"),
        sop_instance_uid=text("SOPInstanceUID"),
        sop_class_uid=text("SOPClassUID"),
        modality=text("Modality"),
        body_part=text("BodyPartExamined"),
        view_position=text("ViewPosition"),
        study_description=text("StudyDescription"),
        series_description=text("SeriesDescription"),
        transfer_syntax=str(dataset.file_meta.get("TransferSyntaxUID", "")) if hasattr(dataset, "file_meta") else "",
        size=size,
        blob=blob,
        calling_ae="",
        called_ae="",
        peer=peer,
    )


def order_key(record: DicomRecord) -> str | None:
    """What orders an image's deliveries: a keyed hash of its study."""
    return hash_id(record.study_uid)


class DicomFeed(Feed[DicomRecord]):
    """``model`` None decides every image on its metadata."""

    kind: ClassVar[str] = "dicom"
    topic: ClassVar[str] = DICOM_INBOUND
    record_type: ClassVar[type] = DicomRecord
    required: ClassVar[tuple[str, ...]] = ("message_id", "blob")

    def __init__(self, model: Model | None, rules: Rules, blobs: BlobSource) -> None:
        super().__init__(model, rules)
        self.blobs = blobs

    def prepare(self, record: DicomRecord) -> Prepared | Rejected:
        try:
            data = self.blobs.get(record.blob)
        except BlobError as exc:  # messages name the reference (a digest) and the store, no content
            return self.reject(record, "blob_unavailable", str(exc))
        try:
            dataset = read_dataset(data)
            del data  # the dataset holds what it needs; a batch of large images is heavy enough
            if self.model is None or not wants_image_model(record):
                return Prepared(None, None, order_key(record))
            image = representative_image(dataset)
        except ImageDecodeError as exc:
            return self.reject(record, exc.reason, str(exc))
        except Exception as exc:  # one image that pydicom chokes on must not stop the feed behind it
            log.error("decode_failed", message=hash_id(record.message_id), error=type(exc).__name__)
            return self.reject(record, "undecodable_pixels", f"pixel decoding failed ({type(exc).__name__})")
        return Prepared(image.pixels, _summary(image), order_key(record))

    def facts(self, record: DicomRecord, content: Content, classification: Classification | None) -> RouteFacts:
        return dicom_facts(record, classification)


def _summary(image: DisplayImage) -> ImageSummary:
    rows, columns = image.pixels.shape
    return ImageSummary(image.frames, image.frame, rows, columns, image.voi, image.inverted)
