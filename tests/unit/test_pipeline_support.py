"""Helpers for the pipeline tests (no tests here): records as the listeners store them, fake models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom

from medroute.records import DicomRecord, Hl7Record

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"
DOCTYPE_LABELS = [
    "consult_history_physical",
    "radiology_report",
    "progress_note",
    "discharge_summary",
    "emergency_room_report",
    "office_note",
    "letter",
]


def record_from(
    raw: bytes | str, encoding: str = "ascii", message_id: str = "msg-1", peer: str = "10.0.0.7:4711"
) -> Hl7Record:
    """An ``Hl7Record`` as the MLLP listener would store it, MSH fields read the simple way."""
    data = raw.encode(encoding) if isinstance(raw, str) else raw
    text = data.decode(encoding).lstrip("\ufeff")
    field_sep = text[3]
    msh = [*text.replace("\n", "\r").split("\r", 1)[0].split(field_sep)]
    msh.insert(1, field_sep)  # MSH-n is msh[n]

    def msh_field(n: int) -> str:
        return msh[n] if n < len(msh) else ""

    return Hl7Record(
        message_id=message_id,
        raw=data,
        charset=msh_field(18),
        encoding=encoding,
        received_at="2024-03-02T10:15:00.000000+00:00",
        peer=peer,
        sending_application=msh_field(3),
        sending_facility=msh_field(4),
        receiving_application=msh_field(5),
        receiving_facility=msh_field(6),
        message_type=msh_field(9),
        control_id=msh_field(10),
        version=msh_field(12),
    )


def fixture_record(name: str, encoding: str = "ascii", message_id: str = "msg-1") -> Hl7Record:
    return record_from((FIXTURES / name).read_bytes(), encoding, message_id)


@dataclass
class FakePrediction:
    label: str
    confidence: float
    scores: dict[str, float]
    below_threshold: bool


@dataclass
class FakeClassifier:
    """Keyword rules in place of a model; remembers each ``predict`` call's batch."""

    name: str = "fake-doctype"
    version: str = "0.0.1"
    labels: list[str] = field(default_factory=lambda: list(DOCTYPE_LABELS))
    threshold: float = 0.3
    calls: list[list[str]] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def predict(self, texts: Sequence[str]) -> list[FakePrediction]:
        self.calls.append(list(texts))
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> FakePrediction:
        upper = text.upper()
        if "IMPRESSION" in upper or "FINDINGS" in upper:
            label, confidence = "radiology_report", 0.92
        elif "DISCHARGE" in upper or "DISCHARGED" in upper:
            label, confidence = "discharge_summary", 0.81
        elif "UNSURE" in upper:
            label, confidence = "letter", 0.2
        else:
            label, confidence = "progress_note", 0.55
        return FakePrediction(label, confidence, {label: confidence}, confidence < self.threshold)


CXR_LABELS = ["normal", "pneumonia"]


def dicom_record(data: bytes, blob: str, message_id: str = "img-1", **overrides: str) -> DicomRecord:
    """A ``DicomRecord`` as the DICOM listener would store it, metadata read from the dataset."""
    ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
    values = {
        "message_id": message_id,
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "sop_class_uid": str(ds.get("SOPClassUID", "")),
        "modality": str(ds.get("Modality", "")),
        "body_part": str(ds.get("BodyPartExamined", "")),
        "view_position": str(ds.get("ViewPosition", "")),
        "study_description": str(ds.get("StudyDescription", "")),
        "series_description": str(ds.get("SeriesDescription", "")),
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
        "size": len(data),
        "blob": blob,
        "calling_ae": "MODALITY1",
        "called_ae": "MEDROUTE",
        "peer": "10.0.0.9:104",
        "received_at": "2024-03-02T10:15:00.000000+00:00",
    }
    return DicomRecord(**{**values, **overrides})


@dataclass
class FakeImageClassifier:
    """Answers from a list, in turn; remembers each ``predict`` call's images."""

    answers: list[tuple[str, float]] = field(default_factory=lambda: [("pneumonia", 0.9)])
    name: str = "fake-cxr"
    version: str = "0.0.1"
    labels: list[str] = field(default_factory=lambda: list(CXR_LABELS))
    threshold: float = 0.6
    calls: list[list[np.ndarray]] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def predict(self, images: Sequence[np.ndarray]) -> list[FakePrediction]:
        self.calls.append(list(images))
        answers = [self.answers[n % len(self.answers)] for n in range(len(images))]
        return [FakePrediction(label, c, {label: c}, c < self.threshold) for label, c in answers]


def build_tiny_image_bundle(directory: Path, name: str = "cxr-pneumonia", version: str = "0.0.1-test") -> Path:
    """A real image bundle for ``models.image.ImageClassifier``: P(pneumonia) is the mean brightness.

    The ONNX graph takes ``image`` [batch, 1, 8, 8] and returns ``probabilities`` [batch, 2].
    """
    from onnx import TensorProto, helper, save_model  # build-time dependency (the train extra)

    from models.bundle import write_manifest

    directory.mkdir(parents=True, exist_ok=True)
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "axis1"], ["p"]),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mean-brightness",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        initializer=[
            helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    save_model(model, str(directory / "model.onnx"))
    write_manifest(
        directory,
        {
            "name": name,
            "version": version,
            "task": "image_classification",
            "input_kind": "image",
            "labels": list(CXR_LABELS),
            "default_threshold": 0.5,
            "preprocessing": {"size": 8, "channels": 1},
        },
    )
    return directory
