"""One micro-batch from stored records to outcomes: extract, classify (one predict call), decide.

Pure of Kafka and Faust, so the worker, replay and batch runs share it. A record whose text cannot
be read becomes a dead letter; a failing model is not the record's fault and raises.
"""

from __future__ import annotations

import binascii
import time
from collections.abc import Sequence

import structlog

from medroute.logs import hash_id
from medroute.records import DeadLetter, Hl7Record
from pipeline import metrics
from pipeline.classify import TextModel, classify_many
from pipeline.extract import ExtractedText, extract_text
from pipeline.outcomes import Decided, Outcome, Rejected
from pipeline.routing import Rules, decide

log = structlog.get_logger(__name__)


def read_record(payload: bytes | None) -> Hl7Record | Rejected:
    """The stored record, or a dead letter saying why it is not one."""
    try:
        record = Hl7Record.from_json(payload or b"")
        if not isinstance(record.raw, bytes) or not record.message_id:
            raise TypeError("raw bytes or message_id missing")
        return record
    except (ValueError, TypeError, binascii.Error) as exc:  # JSONDecodeError is a ValueError
        # Messages of these errors name positions and field names, never the payload's content.
        detail = f"not an Hl7Record: {type(exc).__name__}: {exc}"[:300]
        letter = DeadLetter(source="worker", reason="unreadable_record", detail=detail, raw=payload or b"", peer="")
        return Rejected(letter)


class Processor:
    """Decides micro-batches with one model and one rule set, both loaded once at start."""

    def __init__(self, classifier: TextModel, rules: Rules) -> None:
        self.classifier = classifier
        self.rules = rules

    def process(self, records: Sequence[Hl7Record]) -> list[Outcome]:
        readable: list[tuple[Hl7Record, ExtractedText]] = []
        rejected: dict[int, Rejected] = {}
        for n, record in enumerate(records):
            try:
                with structlog.contextvars.bound_contextvars(message=hash_id(record.message_id)):
                    extracted = extract_text(record)
            except (UnicodeDecodeError, LookupError) as exc:
                detail = f"the stored bytes do not decode as {record.encoding!r} ({type(exc).__name__})"
                rejected[n] = _rejected(record, "undecodable", detail)
                continue
            except Exception as exc:  # one unreadable message must not stop the feed behind it
                # The class only: an exception's message could quote the report.
                log.error("extract_failed", message=hash_id(record.message_id), error=type(exc).__name__)
                rejected[n] = _rejected(record, "extract_failed", f"text extraction failed ({type(exc).__name__})")
                continue
            if extracted.failures:
                metrics.EXTRACTION_FAILURES.inc()
            readable.append((record, extracted))
        started = time.perf_counter()
        classifications = classify_many([extracted for _, extracted in readable], self.classifier)
        if any(classifications):
            metrics.CLASSIFY_LATENCY.observe(time.perf_counter() - started)
        decided = iter(
            [
                Decided(record, extracted, classification, decide(record, extracted, classification, self.rules))
                for (record, extracted), classification in zip(readable, classifications, strict=True)
            ]
        )
        # Outcomes in the order of the records, rejected ones in their places.
        return [rejected[n] if n in rejected else next(decided) for n in range(len(records))]


def _rejected(record: Hl7Record, reason: str, detail: str) -> Rejected:
    log.warning("record_rejected", message=hash_id(record.message_id), reason=reason)
    letter = DeadLetter(
        source="worker",
        reason=reason,
        detail=detail,
        raw=record.raw,
        peer=record.peer,
        received_at=record.received_at,
        message_id=record.message_id,
    )
    return Rejected(letter, record)
