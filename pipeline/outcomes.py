"""What deciding one inbound record can come to: a decision or a dead letter.

Pure data; :mod:`pipeline.publish`, :mod:`pipeline.audit` and :mod:`pipeline.ledger` turn outcomes
into what the worker writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from medroute.config import DICOM_DEADLETTER, HL7_DEADLETTER
from medroute.records import DeadLetter, DicomRecord, Hl7Record, RoutingDecision
from pipeline.classify import Classification
from pipeline.extract import ExtractedText

DEADLETTER_TOPICS = {"hl7": HL7_DEADLETTER, "dicom": DICOM_DEADLETTER}


@dataclass(frozen=True)
class ImageSummary:
    """How the classified image was made from the dataset (no pixels: outcomes wait for Kafka)."""

    frames: int
    frame: int  # 0-based index of the frame the model saw
    rows: int
    columns: int
    voi: str  # see pipeline.pixels.DisplayImage
    inverted: bool


# What a feed read from an item, for the audit trail: a message's text (with its sources), how an
# image was made display-ready, or None (an image decided on its metadata alone).
Content = ExtractedText | ImageSummary | None


@dataclass(frozen=True)
class Decided:
    """An item decided: its record, the model's answer (None without one) and the decision."""

    record: Hl7Record | DicomRecord
    classification: Classification | None
    decision: RoutingDecision
    content: Content = None
    order_key: str | None = None  # what orders the item's deliveries: a keyed hash of its patient or study

    @property
    def message_id(self) -> str:
        return self.record.message_id


@dataclass(frozen=True)
class Rejected:
    dead_letter: DeadLetter
    record: Hl7Record | DicomRecord | None = None  # None when the payload was not a readable record at all
    kind: str = "hl7"  # the feed it came from, which names its dead-letter topic

    @property
    def message_id(self) -> str | None:
        return self.record.message_id if self.record else None

    @property
    def topic(self) -> str:
        return DEADLETTER_TOPICS[self.kind]


Outcome = Decided | Rejected
