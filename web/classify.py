"""``/api/classify``: an upload or a pasted text to labels, confidences and the decision the routing rules
would take, with the worker's own code (no second copy of reading, classifying or routing).

* HL7 v2 messages are read as the MLLP listener reads them (:func:`formats.hl7.record.record_of_bytes`)
  and decided by the worker's feed (:class:`pipeline.hl7_feed.Hl7Feed`) with the worker's text model;
* DICOM files are checked and recorded as the DICOM listener does (:func:`listeners.dicom.events.file_record`
  walks the dataset's structure: a truncated file or bytes that are not DICOM are refused;
  :func:`listeners.dicom.events.inbound_record`), then decided by :class:`pipeline.dicom_feed.DicomFeed`
  with the worker's image model (a frontal chest radiograph is classified, any other image is decided
  on its metadata alone); the upload stands in for the blob store;
* plain text (UTF-8, UTF-16, GB 18030), PDF text layers and PNG/JPEG are read and given a model as
  ``medroute batch`` does (:mod:`tools.operations.batch_inputs`, :mod:`tools.operations.batch_models`:
  ``auto`` picks ``triage-zh`` for Chinese, ``doctype-en`` for other text, ``cxr-pneumonia`` for a
  picture) and decided by the same rules as a report's text or an image (:func:`pipeline.routing.upload_facts`).

Requests that arrive together share one ``predict`` call (:mod:`web.batching`). ``threshold`` replaces the
model's per-label thresholds for this request, so the page's slider shows which decision it would change.
Nothing here is published as a routing decision: the API answers what the rules would do.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from formats.hl7.errors import MessageError
from formats.hl7.record import record_of_bytes
from listeners.dicom.dataset import DatasetError
from listeners.dicom.events import file_record
from medroute.records import RoutingDecision, new_id
from medroute.sealing import BlobError
from pipeline.classify import Classification, Model, classification_of
from pipeline.dicom_feed import DicomFeed
from pipeline.hl7_feed import Hl7Feed
from pipeline.outcomes import Decided, Outcome, Rejected
from pipeline.routing import Rules, decide, upload_facts
from pipeline.worker import Startup
from tools.operations.batch_inputs import ImageInput, InputError, NothingToClassify, TextInput, input_of, kind_of
from tools.operations.batch_models import TASKS, ModelChoice, Models, ModelUnavailableError
from web.batching import MicroBatcher

MLLP_FRAMING = b"\x0b\x1c\r\n \t"
TEXT_TASK, IMAGE_TASK = "text_classification", "image_classification"


class ClassifyError(Exception):
    """A request the API cannot answer with a classification; ``status`` is the HTTP status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _WithThreshold:
    """A model whose predictions are flagged below ``threshold`` instead of the bundle's thresholds."""

    def __init__(self, model: Model, threshold: float) -> None:
        self.model = model
        self.threshold = threshold

    @property
    def ref(self) -> str:
        return self.model.ref

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    def predict(self, inputs: Sequence[Any]) -> list[Any]:
        return [replace(p, below_threshold=p.confidence < self.threshold) for p in self.model.predict(inputs)]


class _UploadBlobs:
    """The blob source of uploaded DICOM files while their feed runs (the worker's is the blob store)."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def add(self, reference: str, data: bytes) -> None:
        with self._lock:
            self._blobs[reference] = data

    def discard(self, reference: str) -> None:
        with self._lock:
            self._blobs.pop(reference, None)

    def get(self, reference: str) -> bytes:
        with self._lock:
            try:
                return self._blobs[reference]
            except KeyError:
                raise BlobError(f"{reference} is not an upload in progress") from None


Answer = tuple[Classification, RoutingDecision]  # a text or picture decided without a stored record


def _decide_uploads(model: Model, rules: Rules, kind: str, inputs: list[Any]) -> list[Answer]:
    """Texts or pictures given on their own: one predict call, then each decided by the rules."""
    answers = []
    for prediction in model.predict(inputs):
        classification = classification_of(model.ref, prediction)
        facts = upload_facts(kind, classification, has_text=kind == "hl7")
        answers.append((classification, decide(new_id(), facts, classification, rules)))
    return answers


@dataclass(frozen=True)
class Request:
    """What to classify: ``data`` (a file's bytes, with its ``name``) or ``text`` (pasted)."""

    task: str = "auto"
    data: bytes | None = None
    name: str = "upload"
    text: str | None = None
    threshold: float | None = None


class Classifier:
    """The models and rules of the worker, loaded once, and a micro-batcher per model and threshold."""

    def __init__(self, startup: Startup, executor: Executor) -> None:
        self.rules = startup.rules
        self.executor = executor
        self.text_model: Model = startup.classifier
        self.image_model: Model | None = startup.image_classifier
        self.models = Models()
        self._use(self.text_model)
        if self.image_model is not None:
            self._use(self.image_model)
        self._uploads = _UploadBlobs()
        self._lanes: dict[tuple[str, str, float | None], MicroBatcher[Any, Any]] = {}

    def _use(self, model: Model) -> None:
        """``medroute batch``'s names (``doctype-en``) answer with the worker's model of that name."""
        self.models.use(model.ref.split("@", 1)[0], model)

    def swap(self, task: str, model: Model) -> None:
        """A promoted model (read from the control topic) replaces the worker's model of its task."""
        if task == TEXT_TASK:
            self.text_model = model
        elif task == IMAGE_TASK:
            self.image_model = model
        self._use(model)

    @property
    def loaded(self) -> list[str]:
        return [m.ref for m in (self.text_model, self.image_model) if m is not None]

    # -- the lanes: one micro-batcher per way of deciding, model and threshold -------------------------

    def _lane(self, way: str, model: Model | None, threshold: float | None) -> MicroBatcher[Any, Any]:
        key = (way, model.ref if model is not None else "none", threshold)
        lane = self._lanes.get(key)
        if lane is None:
            used = _WithThreshold(model, threshold) if model is not None and threshold is not None else model
            process: Any
            if way == "hl7":
                process = Hl7Feed(used, self.rules).process
            elif way == "dicom":
                process = DicomFeed(used, self.rules, self._uploads).process
            else:
                kind = "hl7" if way == "text" else "dicom"
                process = _process_uploads(used, self.rules, kind)
            lane = self._lanes[key] = MicroBatcher(process, self.executor)
        return lane

    # -- requests --------------------------------------------------------------------------------------

    async def classify(self, request: Request) -> dict[str, Any]:
        started = time.perf_counter()
        if request.task not in TASKS:
            raise ClassifyError(422, f"unknown task_type {request.task!r} (one of {', '.join(TASKS)})")
        if request.threshold is not None and not 0.0 <= request.threshold <= 1.0:
            raise ClassifyError(422, "threshold must be between 0 and 1")
        if request.text is not None:
            kind, data, name = "text", request.text.encode("utf-8"), "text"
        elif request.data is not None:
            kind, data, name = kind_of(Path(request.name), request.data[:132]), request.data, request.name
        else:
            raise ClassifyError(422, "nothing to classify: send a file (multipart 'file') or JSON {\"text\": ...}")
        if not data.strip():
            raise ClassifyError(422, "empty file" if request.text is None else "empty text")
        if kind == "hl7":
            result = await self._hl7(data, request)
        elif kind == "dicom":
            result = await self._dicom(data, request)
        else:
            result = await self._upload(kind, name, data, request)
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return result

    async def _hl7(self, data: bytes, request: Request) -> dict[str, Any]:
        _refuse_task(request.task, TEXT_TASK, "an HL7 v2 message")
        try:
            record = record_of_bytes(data.strip(MLLP_FRAMING), message_id=new_id())
        except MessageError as exc:
            raise ClassifyError(422, f"not a valid HL7 v2 message: {exc.detail}") from None
        outcome = await self._lane("hl7", self.text_model, request.threshold).submit(record)
        return _result("hl7", outcome, request.threshold, {"message_type": record.message_type})

    async def _dicom(self, data: bytes, request: Request) -> dict[str, Any]:
        _refuse_task(request.task, IMAGE_TASK, "a DICOM file")
        loop = asyncio.get_running_loop()
        reference = "sha256:" + hashlib.sha256(data).hexdigest()
        try:
            record = await loop.run_in_executor(self.executor, file_record, data, reference, "web")
        except DatasetError as exc:
            raise ClassifyError(422, f"DICOM: {exc.detail}") from None
        self._uploads.add(reference, data)
        try:
            outcome = await self._lane("dicom", self.image_model, request.threshold).submit(record)
        finally:
            self._uploads.discard(reference)
        facts = {"modality": record.modality, "body_part": record.body_part, "view_position": record.view_position}
        return _result("dicom", outcome, request.threshold, facts)

    async def _upload(self, kind: str, name: str, data: bytes, request: Request) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        try:
            if kind == "text" and len(data) < 65536:
                item = input_of(name, data, kind)  # cheap: no thread hop
            else:
                item = await loop.run_in_executor(self.executor, input_of, name, data, kind)
        except InputError as exc:
            status = 415 if kind == "text" else 422  # bytes of no kind we read are the wrong type
            raise ClassifyError(status, f"{kind}: {exc}") from None
        if isinstance(item, NothingToClassify):
            raise ClassifyError(422, f"{kind}: nothing to classify: {item.reason}")
        choice = ModelChoice(request.task).choose(item)
        if choice.model is None:
            raise ClassifyError(422, choice.reason)
        try:
            model = self.models.get(choice.model)
        except ModelUnavailableError as exc:
            raise ClassifyError(503, str(exc)) from None
        way = "text" if isinstance(item, TextInput) else "image"
        payload = item.text if isinstance(item, TextInput) else item.pixels
        outcome = await self._lane(way, model, request.threshold).submit(payload)
        extra: dict[str, Any] = {"note": item.note}
        if isinstance(item, TextInput):
            extra["language"] = item.language
        elif isinstance(item, ImageInput):
            extra["chest_radiograph"] = item.chest_radiograph
        return _result(kind, outcome, request.threshold, extra)


def _process_uploads(model: Model | None, rules: Rules, kind: str) -> Any:
    assert model is not None

    def process(inputs: list[Any]) -> list[Answer]:
        return _decide_uploads(model, rules, kind, inputs)

    return process


def _refuse_task(task: str, wanted: str, what: str) -> None:
    if task not in ("auto", wanted):
        raise ClassifyError(422, f"{what} is not input for {task}; use task_type {wanted} or auto")


def _result(kind: str, outcome: Outcome | Answer, threshold: float | None, extra: dict[str, Any]) -> dict[str, Any]:
    if isinstance(outcome, Rejected):
        raise ClassifyError(422, f"{kind}: {outcome.dead_letter.detail}")
    classification, decision = (outcome.classification, outcome.decision) if isinstance(outcome, Decided) else outcome
    return {"kind": kind, **_classification(classification, threshold), **_decision(decision), **extra}


def _classification(classification: Classification | None, threshold: float | None) -> dict[str, Any]:
    if classification is None:  # decided on metadata alone (an ADT message, an image that is not a chest film)
        return {"model": None, "label": None, "confidence": None, "below_threshold": None, "labels": []}
    ranked = sorted(classification.scores.items(), key=lambda item: -item[1])
    return {
        "model": classification.model,
        "label": classification.label,
        "confidence": round(classification.confidence, 6),
        "below_threshold": classification.below_threshold,
        "threshold": threshold,
        "labels": [{"label": label, "confidence": round(float(p), 6)} for label, p in ranked],
    }


def _decision(decision: RoutingDecision) -> dict[str, Any]:
    return {
        "decision": {
            "rule": decision.rule,
            "destinations": decision.destinations,
            "message_type": decision.message_type,
            "reason": decision.reason,
        }
    }
