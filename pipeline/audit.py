"""Audit events for what the worker did with one record: receive, classify, route (or reject).

One builder for every feed; the kind-specific fields of an event come from the record (receive) and
from what the feed read of it (classify). Details carry no PHI: message types, system names, model
and rule names, and identifiers only as keyed hashes (``medroute.logs.hash_id``); never report text,
patient names or identifiers. For DICOM: study, series and instance UIDs only hashed; no descriptions
(free text); the SOP class and transfer syntax (standard constants), modality, body part and view,
AE titles (system names).
"""

from __future__ import annotations

from typing import Any

from medroute.logs import hash_id
from medroute.records import AuditEvent, DicomRecord, Hl7Record
from pipeline.extract import ExtractedText, message_type
from pipeline.outcomes import Content, Decided, ImageSummary, Outcome, Rejected
from pipeline.routing import dicom_message_type

ACTOR = "worker"


def events_for(outcome: Outcome) -> list[AuditEvent]:
    if isinstance(outcome, Rejected):
        return [_rejected(outcome)]
    message_id = outcome.message_id
    at = outcome.decision.decided_at  # one batch's steps happen at one instant, as far as a reader can tell
    events = [
        AuditEvent(action="receive", actor=ACTOR, message_id=message_id, details=_received(outcome.record), at=at)
    ]
    classification = outcome.classification
    if classification is not None:
        details = {
            "model": classification.model,
            "label": classification.label,
            "confidence": classification.confidence,
            "below_threshold": classification.below_threshold,
            **_content(outcome.content),
        }
        events.append(AuditEvent(action="classify", actor=ACTOR, message_id=message_id, details=details, at=at))
    events.append(AuditEvent(action="route", actor=ACTOR, message_id=message_id, details=_routed(outcome), at=at))
    return events


def _received(record: Hl7Record | DicomRecord) -> dict[str, Any]:
    common = {"received_at": record.received_at, "peer": record.peer}
    if isinstance(record, Hl7Record):
        return {
            **common,
            "message_type": message_type(record),
            "control_id": hash_id(record.control_id),
            "sending_application": record.sending_application,
            "sending_facility": record.sending_facility,
            "bytes": len(record.raw),
        }
    return {
        **common,
        "message_type": dicom_message_type(record),
        "study": hash_id(record.study_uid),
        "series": hash_id(record.series_uid),
        "instance": hash_id(record.sop_instance_uid),
        "sop_class_uid": record.sop_class_uid,
        "transfer_syntax": record.transfer_syntax,
        "modality": record.modality,
        "body_part": record.body_part,
        "view_position": record.view_position,
        "calling_ae": record.calling_ae,
        "called_ae": record.called_ae,
        "bytes": record.size,
    }


def _content(content: Content) -> dict[str, Any]:
    """What the model was given: the text's sources and length, or which frame and how it was made."""
    if isinstance(content, ExtractedText):
        return {"sources": content.sources, "characters": len(content.text)}
    if isinstance(content, ImageSummary):
        return {
            "frame": content.frame,
            "frames": content.frames,
            "rows": content.rows,
            "columns": content.columns,
            "voi": content.voi,
            "inverted": content.inverted,
        }
    return {}


def _routed(outcome: Decided) -> dict[str, Any]:
    decision = outcome.decision
    details: dict[str, Any] = {
        "rule": decision.rule,
        "destinations": decision.destinations,
        "message_type": decision.message_type,
        "model": decision.model,
    }
    if decision.reason:
        details["reason"] = decision.reason
    if isinstance(outcome.content, ExtractedText) and outcome.content.failures:
        details["extraction_failures"] = outcome.content.failures
    return details


def _rejected(outcome: Rejected) -> AuditEvent:
    letter = outcome.dead_letter
    return AuditEvent(
        action="reject",
        actor=ACTOR,
        message_id=letter.message_id,
        details={"reason": letter.reason, "dead_letter_topic": outcome.topic, "peer": letter.peer},
    )
