"""Helpers for the pipeline tests (no tests here): records as the listener stores them, a fake model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medroute.records import Hl7Record

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
