"""The HL7 feed: a stored message's clinical text (:mod:`pipeline.extract`) to the text model.

A message without text (ADT, ORM, most lab results) is decided on its metadata alone; one whose
stored bytes do not decode in the recorded charset, or whose extraction fails, becomes a dead letter
with the raw bytes.
"""

from __future__ import annotations

from typing import ClassVar

import structlog

from formats.hl7.message import read_lenient
from medroute.config import HL7_INBOUND
from medroute.logs import hash_id
from medroute.records import Hl7Record
from pipeline import metrics
from pipeline.classify import Classification
from pipeline.extract import ExtractedText, text_of
from pipeline.feed import Feed, Prepared
from pipeline.outcomes import Content, Rejected
from pipeline.routing import EXTRACTION_FAILED, RouteFacts, hl7_facts

log = structlog.get_logger(__name__)


def order_key(record: Hl7Record, patient_id: str | None) -> str | None:
    """What orders a message's deliveries: a keyed hash of its patient (PID-3), else of its control id, as the
    listener keys ``hl7.inbound``."""
    return hash_id(patient_id or record.control_id or record.message_id)


class Hl7Feed(Feed[Hl7Record]):
    kind: ClassVar[str] = "hl7"
    topic: ClassVar[str] = HL7_INBOUND
    record_type: ClassVar[type] = Hl7Record
    required: ClassVar[tuple[str, ...]] = ("message_id", "raw")

    def prepare(self, record: Hl7Record) -> Prepared | Rejected:
        try:
            message = read_lenient(record.text())
            extracted = text_of(message, record.encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            detail = f"the stored bytes do not decode as {record.encoding!r} ({type(exc).__name__})"
            return self.reject(record, "undecodable", detail)
        except Exception as exc:  # one unreadable message must not stop the feed behind it
            # The class only: an exception's message could quote the report.
            log.error("extract_failed", message=hash_id(record.message_id), error=type(exc).__name__)
            return self.reject(record, "extract_failed", f"text extraction failed ({type(exc).__name__})")
        if extracted.failures:
            metrics.EXTRACTION_FAILURES.inc()
        return Prepared(extracted.text or None, extracted, order_key(record, message.patient_id))

    def facts(self, record: Hl7Record, content: Content, classification: Classification | None) -> RouteFacts:
        assert isinstance(content, ExtractedText)
        return hl7_facts(record, content, classification)

    def reason_of(self, content: Content) -> str | None:
        return EXTRACTION_FAILED if isinstance(content, ExtractedText) and content.failures else None

    def raw_of(self, record: Hl7Record) -> bytes:
        return record.raw
