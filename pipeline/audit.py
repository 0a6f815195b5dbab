"""Audit events for what the worker did with one record: receive, classify, route (or reject).

Details carry no PHI: message types, system names, model and rule names, and identifiers only
as keyed hashes (``medroute.logs.hash_id``); never report text, patient names or identifiers. For
DICOM: study, series and instance UIDs only hashed; no descriptions (free text); the SOP class and
transfer syntax (standard constants), modality, body part and view, AE titles (system names).
"""

from __future__ import annotations

from medroute.logs import hash_id
from medroute.records import AuditEvent, DicomRecord, Hl7Record
from pipeline.extract import message_type
from pipeline.outcomes import Decided, ImageDecided, Outcome, Rejected
from pipeline.routing import dicom_message_type

ACTOR = "worker"


def events_for(outcome: Outcome) -> list[AuditEvent]:
    if isinstance(outcome, Rejected):
        return _rejected(outcome)
    if isinstance(outcome, ImageDecided):
        events = [_image_received(outcome.record)]
        if outcome.classification is not None:
            events.append(_image_classified(outcome))
    else:
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
        },
    )


def _image_received(record: DicomRecord) -> AuditEvent:
    return AuditEvent(
        action="receive",
        actor=ACTOR,
        message_id=record.message_id,
        details={
            "received_at": record.received_at,
            "peer": record.peer,
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
        },
    )


def _image_classified(outcome: ImageDecided) -> AuditEvent:
    classification = outcome.classification
    assert classification is not None
    image = outcome.image
    return AuditEvent(
        action="classify",
        actor=ACTOR,
        message_id=outcome.message_id,
        details={
            "model": classification.model,
            "label": classification.label,
            "confidence": classification.confidence,
            "below_threshold": classification.below_threshold,
            # Which frame the model saw and how it was made display-ready (pipeline.pixels).
            "frame": image.frame if image else None,
            "frames": image.frames if image else None,
            "rows": image.rows if image else None,
            "columns": image.columns if image else None,
            "voi": image.voi if image else None,
            "inverted": image.inverted if image else None,
        },
    )


def _routed(outcome: Decided | ImageDecided) -> AuditEvent:
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
            **({"reason": decision.reason} if decision.reason else {}),
            **({"extraction_failures": outcome.extracted.failures} if _failures(outcome) else {}),
        },
    )


def _rejected(outcome: Rejected) -> list[AuditEvent]:
    letter = outcome.dead_letter
    return [
        AuditEvent(
            action="reject",
            actor=ACTOR,
            message_id=letter.message_id,
            details={"reason": letter.reason, "dead_letter_topic": outcome.topic, "peer": letter.peer},
        )
    ]


def _failures(outcome: Decided | ImageDecided) -> list[str]:
    return outcome.extracted.failures if isinstance(outcome, Decided) else []
