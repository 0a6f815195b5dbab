"""``medroute routes check FILE`` and ``medroute routes test FILE ITEM...``: routing rules tried before they
go live, with the worker's own models and code.

``check`` reads the rules as the worker does (labels against the configured models) and, with a destinations
file (``--destinations`` or ``MEDROUTE_DESTINATIONS``), refuses rules that name a destination it does not
define; errors read ``file:line: what is wrong`` (exit 2). ``test`` decides each ITEM (an HL7 file, a DICOM
file, or any other file as plain report text) as the worker would and prints the model's answer, the rule
that fires and the destinations.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pydicom

from formats.hl7.errors import MessageError
from formats.hl7.record import record_of_bytes
from medroute.records import DicomRecord, new_id, utc_now
from pipeline.classify import Classification, classification_of
from pipeline.dicom_feed import DicomFeed
from pipeline.forward.destinations import DestinationsError, load_destinations
from pipeline.hl7_feed import Hl7Feed
from pipeline.outcomes import Decided
from pipeline.routing import RouteFacts, Rules, decide
from pipeline.settings import WorkerSettings
from pipeline.worker import Startup, StartupError, load_startup

EXIT_OK, EXIT_INVALID = 0, 2


def undefined_destinations(rules: Rules, destinations_file: Path) -> list[str]:
    """``file:line`` errors for rules naming destinations the file does not define."""
    defined = load_destinations(destinations_file)
    return [
        f"{rules.source}:{rule.line}: rule {rule.name!r} names destination {name!r}, "
        f"which {destinations_file} does not define"
        for rule in rules.rules
        for name in rule.destinations
        if name not in defined
    ]


def _startup(rules_file: Path) -> Startup:
    return load_startup(replace(WorkerSettings(), routes=rules_file))


def check(rules_file: Path, destinations_file: Path | None) -> int:
    try:
        startup = _startup(rules_file)
        errors = undefined_destinations(startup.rules, destinations_file) if destinations_file else []
    except (StartupError, DestinationsError) as exc:
        print(exc)
        return EXIT_INVALID
    for error in errors:
        print(error)
    if errors:
        return EXIT_INVALID
    names = sorted({d for rule in startup.rules.rules for d in rule.destinations})
    print(f"{rules_file}: {len(startup.rules.rules)} rules, destinations: {', '.join(names)}")
    return EXIT_OK


class _OneBlob:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def get(self, reference: str) -> bytes:
        return self.data


def _dicom_record(data: bytes) -> DicomRecord:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)

    def text(keyword: str) -> str:
        return str(ds.get(keyword, "") or "")

    return DicomRecord(
        message_id=new_id(), study_uid=text("StudyInstanceUID"), series_uid=text("SeriesInstanceUID"),
        sop_instance_uid=text("SOPInstanceUID"), sop_class_uid=text("SOPClassUID"), modality=text("Modality"),
        body_part=text("BodyPartExamined"), view_position=text("ViewPosition"),
        study_description=text("StudyDescription"), series_description=text("SeriesDescription"),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID), size=len(data), blob="sha256:" + "0" * 64,
        calling_ae="ROUTES-TEST", called_ae="MEDROUTE", peer="", received_at=utc_now(),
    )  # fmt: skip


def decide_item(startup: Startup, path: Path) -> dict:
    """What the worker would decide for one file."""
    data = path.read_bytes()
    if data[128:132] == b"DICM":
        feed = DicomFeed(startup.image_classifier, startup.rules, _OneBlob(data))
        outcome = feed.process([_dicom_record(data)])[0]
    elif data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"MSH"):
        try:
            record = record_of_bytes(data)
        except MessageError as exc:
            return {"item": str(path), "error": f"not a message the listener would take: {exc}"}
        outcome = Hl7Feed(startup.classifier, startup.rules).process([record])[0]
    else:
        text = data.decode("utf-8", "replace")
        classification = classification_of(startup.classifier.ref, startup.classifier.predict([text])[0])
        return _summary(path, "text", classification, _text_decision(startup.rules, classification))
    if not isinstance(outcome, Decided):
        return {"item": str(path), "error": f"dead letter: {outcome.dead_letter.reason}: {outcome.dead_letter.detail}"}
    return _summary(path, outcome.decision.kind, outcome.classification, outcome.decision)


def _text_decision(rules: Rules, classification: Classification):  # type: ignore[no-untyped-def]
    facts = RouteFacts(kind="hl7", message_type="", sending_application="", sending_facility="", has_text=True,
                       label=classification.label, confidence=classification.confidence,
                       below_threshold=classification.below_threshold)  # fmt: skip
    return decide("text", facts, classification, rules)


def _summary(path: Path, kind: str, classification: Classification | None, decision) -> dict:  # type: ignore[no-untyped-def]
    return {
        "item": str(path),
        "kind": kind,
        "model": classification.model if classification else None,
        "label": classification.label if classification else None,
        "confidence": round(classification.confidence, 4) if classification else None,
        "rule": decision.rule,
        "destinations": decision.destinations,
    }


def test(rules_file: Path, items: list[Path], as_json: bool = False) -> int:
    try:
        startup = _startup(rules_file)
    except StartupError as exc:
        print(exc)
        return EXIT_INVALID
    status = EXIT_OK
    for path in items:
        try:
            result = decide_item(startup, path)
        except OSError as exc:
            result = {"item": str(path), "error": f"cannot read: {exc.strerror}"}
        status = EXIT_INVALID if "error" in result else status
        print(json.dumps(result) if as_json else _line(result))
    return status


def _line(result: dict) -> str:
    if "error" in result:
        return f"{result['item']}: {result['error']}"
    answer = "no model (metadata only)" if result["model"] is None else (
        f"{result['model']} {result['label']} ({result['confidence']:.2f})")  # fmt: skip
    return f"{result['item']}: {result['kind']}: {answer}; rule {result['rule']} -> {', '.join(result['destinations'])}"
