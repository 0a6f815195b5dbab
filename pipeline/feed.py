"""A feed: one kind of inbound item (HL7 messages, DICOM instances) from stored record to outcome.

Every feed has the same shape, pure of Kafka and Faust so that the worker, replay and batch runs share
it: ``read`` turns a stored payload into a record (or a dead letter), and ``process`` decides a
micro-batch in four steps:

1. **prepare** each record (kind-specific): what the model takes from it (the report's text, the
   image's pixels), None for a decision on metadata alone, or a dead letter when the item is unreadable;
2. **classify** every model input of the batch in one ``predict`` call;
3. **decide** each record by the routing rules, from its facts and its classification;
4. outcomes come back in the order of the records, rejected ones in their places.

A record that cannot be read or prepared becomes a dead letter and the batch goes on; a failing model is
not the record's fault and raises.
"""

from __future__ import annotations

import binascii
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import structlog

from medroute.logs import hash_id
from medroute.records import DeadLetter, DicomRecord, Hl7Record
from pipeline import metrics
from pipeline.classify import Classification, Model, classification_of
from pipeline.outcomes import Content, Decided, Outcome, Rejected
from pipeline.routing import RouteFacts, Rules, decide

log = structlog.get_logger(__name__)

R = TypeVar("R", Hl7Record, DicomRecord)


@dataclass(frozen=True)
class Prepared:
    """What a feed read from one record: the model's input (None: decide on metadata alone) and what
    the audit trail says about it (e.g. the text's sources, or how the image was made)."""

    model_input: Any
    content: Content
    order_key: str | None = None  # a keyed hash of the patient or study (see pipeline.publish.forwardable)


class Feed(ABC, Generic[R]):
    """One inbound topic's records to outcomes; ``model`` may be swapped between micro-batches."""

    kind: ClassVar[str]  # "hl7" | "dicom": the record kind, the dead-letter topic, the rules' ``kind``
    record_type: ClassVar[type]
    required: ClassVar[tuple[str, ...]]  # fields a stored record must have valued

    def __init__(self, model: Model | None, rules: Rules) -> None:
        self.model = model
        self.rules = rules

    # -- kind-specific steps ---------------------------------------------------------------------

    @abstractmethod
    def prepare(self, record: R) -> Prepared | Rejected:
        """The model input and content of one record, or its dead letter."""

    @abstractmethod
    def facts(self, record: R, content: Content, classification: Classification | None) -> RouteFacts:
        """What the routing rules look at."""

    def reason_of(self, content: Content) -> str | None:
        """Why the decision rests on less than the whole item (e.g. ``extraction_failed``), if it does."""
        return None

    def raw_of(self, record: R) -> bytes:
        """What a dead letter keeps of the record: the item's bytes where the record holds them."""
        return record.to_json()

    # -- the shared shape ------------------------------------------------------------------------

    def read(self, payload: bytes | None) -> R | Rejected:
        """The stored record, or a dead letter saying why it is not one."""
        try:
            record = self.record_type.from_json(payload or b"")
            missing = [name for name in self.required if not getattr(record, name)]
            if missing:
                raise TypeError(f"{', '.join(missing)} missing")
            return record
        except (ValueError, TypeError, binascii.Error) as exc:  # JSONDecodeError is a ValueError
            # Messages of these errors name positions and field names, never the payload's content.
            detail = f"not a {self.record_type.__name__}: {type(exc).__name__}: {exc}"[:300]
            letter = DeadLetter(source="worker", reason="unreadable_record", detail=detail, raw=payload or b"", peer="")
            return Rejected(letter, kind=self.kind)

    def process(self, records: Sequence[R]) -> list[Outcome]:
        prepared: list[Prepared | Rejected] = [self.prepare(record) for record in records]
        classifications = self._classify(prepared)
        outcomes: list[Outcome] = []
        for record, item, classification in zip(records, prepared, classifications, strict=True):
            if isinstance(item, Rejected):
                outcomes.append(item)
                continue
            facts = self.facts(record, item.content, classification)
            decision = decide(record.message_id, facts, classification, self.rules, self.reason_of(item.content))
            outcomes.append(Decided(record, classification, decision, item.content, item.order_key))
        return outcomes

    def reject(self, record: R, reason: str, detail: str) -> Rejected:
        """The dead letter of a record that cannot be decided."""
        log.warning("record_rejected", kind=self.kind, message=hash_id(record.message_id), reason=reason)
        letter = DeadLetter(
            source="worker",
            reason=reason,
            detail=detail[:500],
            raw=self.raw_of(record),
            peer=record.peer,
            received_at=record.received_at,
            message_id=record.message_id,
        )
        return Rejected(letter, record, kind=self.kind)

    def _classify(self, prepared: Sequence[Prepared | Rejected]) -> list[Classification | None]:
        results: list[Classification | None] = [None] * len(prepared)
        wanted = [n for n, item in enumerate(prepared) if isinstance(item, Prepared) and item.model_input is not None]
        if not wanted or self.model is None:
            return results
        model = self.model  # one version for the whole batch, even if a promotion swaps it meanwhile
        started = time.perf_counter()
        predictions = model.predict([prepared[n].model_input for n in wanted])  # type: ignore[union-attr]
        if len(predictions) != len(wanted):
            raise RuntimeError(f"{model.ref} returned {len(predictions)} predictions for {len(wanted)} inputs")
        metrics.CLASSIFY_LATENCY.observe(time.perf_counter() - started)
        for n, prediction in zip(wanted, predictions, strict=True):
            results[n] = classification_of(model.ref, prediction)
        return results
