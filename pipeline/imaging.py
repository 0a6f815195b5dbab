"""One micro-batch of DICOM records to outcomes: fetch the blob, pick the model, decode, classify, decide.

Pure of Kafka and Faust, like :mod:`pipeline.process`. Per record:

1. the blob is read from the blob store (decrypted, digest checked) and parsed as a DICOM file, for
   every record: an image routed to the PACS must exist and be DICOM;
2. the model is chosen from the record's metadata (:func:`wants_image_model`): a frontal chest
   radiograph goes to the image model; anything else is decided on its metadata alone;
3. images for the model are decoded (:mod:`pipeline.pixels`, the middle frame) and classified in one
   ``predict`` call for the whole batch; then every record is routed by the rules.

A record whose blob is missing or fails authentication, that is not DICOM, or whose pixels cannot
be decoded becomes a dead letter (its record JSON as ``raw``: the dataset stays in the blob store,
named by the record's ``blob``) and the batch goes on. A failing model is not the record's fault
and raises.
"""

from __future__ import annotations

import binascii
import re
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import structlog

from medroute.logs import hash_id
from medroute.records import DeadLetter, DicomRecord
from medroute.sealing import BlobError
from pipeline import metrics
from pipeline.classify import Classification, Prediction, classification_of
from pipeline.outcomes import ImageDecided, ImageSummary, Outcome, Rejected
from pipeline.pixels import DisplayImage, ImageDecodeError, read_dataset, representative_image
from pipeline.routing import Rules, decide_dicom

log = structlog.get_logger(__name__)

CHEST_MODALITIES = frozenset({"CR", "DX"})
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG"})
FRONTAL_VIEWS = frozenset({"", "PA", "AP"})  # (0018,5101) View Position; often empty on CR
_CHEST_WORDS = re.compile(r"\b(chest|thorax|lungs?|cxr)\b", re.IGNORECASE)
# A description that says lateral or decubitus is not the frontal view the model was trained on.
_NOT_FRONTAL_WORDS = re.compile(r"\b(lat|lateral|decub\w*)\b", re.IGNORECASE)


class BlobSource(Protocol):
    def get(self, reference: str) -> bytes: ...  # medroute.blobstore.Blobs


class ImageModel(Protocol):
    """The interface of ``models.image.ImageClassifier``."""

    @property
    def ref(self) -> str: ...  # "name@version"

    @property
    def labels(self) -> list[str]: ...

    def predict(self, images: Sequence[np.ndarray]) -> Sequence[Prediction]: ...


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


def read_dicom_record(payload: bytes | None) -> DicomRecord | Rejected:
    """The stored record, or a dead letter saying why it is not one."""
    try:
        record = DicomRecord.from_json(payload or b"")
        if not record.message_id or not isinstance(record.blob, str) or not record.blob:
            raise TypeError("message_id or blob missing")
        return record
    except (ValueError, TypeError, binascii.Error) as exc:  # JSONDecodeError is a ValueError
        detail = f"not a DicomRecord: {type(exc).__name__}: {exc}"[:300]
        letter = DeadLetter(source="worker", reason="unreadable_record", detail=detail, raw=payload or b"", peer="")
        return Rejected(letter, kind="dicom")


class ImageProcessor:
    """Decides micro-batches of DICOM records; ``classifier`` None decides every one on metadata."""

    def __init__(self, classifier: ImageModel | None, rules: Rules, blobs: BlobSource) -> None:
        self.classifier = classifier
        self.rules = rules
        self.blobs = blobs

    def process(self, records: Sequence[DicomRecord]) -> list[Outcome]:
        rejected: dict[int, Rejected] = {}
        images: dict[int, DisplayImage] = {}
        for n, record in enumerate(records):
            with structlog.contextvars.bound_contextvars(message=hash_id(record.message_id)):
                prepared = self._prepare(record)
            if isinstance(prepared, Rejected):
                rejected[n] = prepared
            elif prepared is not None:
                images[n] = prepared
        classifications = self._classify(images)
        outcomes: list[Outcome] = []
        for n, record in enumerate(records):
            if n in rejected:
                outcomes.append(rejected[n])
                continue
            classification = classifications.get(n)
            decision = decide_dicom(record, classification, self.rules)
            outcomes.append(ImageDecided(record, classification, decision, _summary(images.get(n))))
        return outcomes

    def _prepare(self, record: DicomRecord) -> DisplayImage | Rejected | None:
        """The image for the model, None for a metadata-only decision, or the dead letter."""
        try:
            data = self.blobs.get(record.blob)
        except BlobError as exc:  # messages name the reference (a digest) and the store, no content
            return _rejected(record, "blob_unavailable", str(exc))
        try:
            dataset = read_dataset(data)
            del data  # the dataset holds what it needs; a batch of large images is heavy enough
            if self.classifier is None or not wants_image_model(record):
                return None
            return representative_image(dataset)
        except ImageDecodeError as exc:
            return _rejected(record, exc.reason, str(exc))
        except Exception as exc:  # one image that pydicom chokes on must not stop the feed behind it
            log.error("decode_failed", message=hash_id(record.message_id), error=type(exc).__name__)
            return _rejected(record, "undecodable_pixels", f"pixel decoding failed ({type(exc).__name__})")

    def _classify(self, images: dict[int, DisplayImage]) -> dict[int, Classification]:
        if not images or self.classifier is None:
            return {}
        order = sorted(images)
        started = time.perf_counter()
        predictions = self.classifier.predict([images[n].pixels for n in order])
        if len(predictions) != len(order):
            raise RuntimeError(f"{self.classifier.ref} returned {len(predictions)} predictions for {len(order)} images")
        metrics.CLASSIFY_LATENCY.observe(time.perf_counter() - started)
        return {n: classification_of(self.classifier.ref, p) for n, p in zip(order, predictions, strict=True)}


def _summary(image: DisplayImage | None) -> ImageSummary | None:
    if image is None:
        return None
    rows, columns = image.pixels.shape
    return ImageSummary(image.frames, image.frame, rows, columns, image.voi, image.inverted)


def _rejected(record: DicomRecord, reason: str, detail: str) -> Rejected:
    log.warning("record_rejected", message=hash_id(record.message_id), reason=reason)
    letter = DeadLetter(
        source="worker",
        reason=reason,
        detail=detail[:500],
        raw=record.to_json(),
        peer=record.peer,
        received_at=record.received_at,
        message_id=record.message_id,
    )
    return Rejected(letter, record, kind="dicom")
