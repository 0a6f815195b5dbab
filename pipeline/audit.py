"""Audit events for what the worker did with one record: receive, classify, route (or reject).

Details carry no PHI: message types, system names, model and rule names, and identifiers only
as keyed hashes (``medroute.logs.hash_id``); never report text, patient names or identifiers.
"""

from __future__ import annotations

from medroute.config import HL7_DEADLETTER
from medroute.logs import hash_id
from medroute.records import AuditEvent, Hl7Record
from pipeline.extract import message_type
from pipeline.process import Decided, Outcome, Rejected

ACTOR = "worker"


def events_for(outcome: Outcome) -> list[AuditEvent]:
    if isinstance(outcome, Rejected):
        return _rejected(outcome)
    events = [_received(outcome.record)]
    if outcome.classification is not None:
        events.append(_classified(outcome))
    events.append(_routed(outcome))
    return events


def _received(record: Hl7Record) -> AuditEvent:
    return AuditEvent(
        action="receive",
        actor=ACTOR,
        message_id=record.message_id,
        details={
            "received_at": record.received_at,
            "peer": record.peer,
            "message_type": message_type(record),
            "control_id": hash_id(record.control_id),
            "sending_application": record.sending_application,
            "sending_facility": record.sending_facility,
            "bytes": len(record.raw),
        },
    )


def _classified(outcome: Decided) -> AuditEvent:
    classification = outcome.classification
    assert classification is not None
    return AuditEvent(
        action="classify",
        actor=ACTOR,
        message_id=outcome.message_id,
        details={
            "model": classification.model,
            "label": classification.label,
            "confidence": classification.confidence,
            "below_threshold": classification.below_threshold,
            "sources": outcome.extracted.sources,
            "characters": len(outcome.extracted.text),
            "parse": outcome.extracted.parse,
        },
    )


def _routed(outcome: Decided) -> AuditEvent:
    decision = outcome.decision
    return AuditEvent(
        action="route",
        actor=ACTOR,
        message_id=outcome.message_id,
        details={
            "rule": decision.rule,
            "destinations": decision.destinations,
            "message_type": decision.message_type,
            "model": decision.model,
        },
    )


def _rejected(outcome: Rejected) -> list[AuditEvent]:
    letter = outcome.dead_letter
    return [
        AuditEvent(
            action="reject",
            actor=ACTOR,
            message_id=letter.message_id,
            details={"reason": letter.reason, "dead_letter_topic": HL7_DEADLETTER, "peer": letter.peer},
        )
    ]
