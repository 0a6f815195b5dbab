"""Routing: which rule fires for an item, and the decision that names it. Pure functions.

Rules are tried in order and the first whose every condition holds wins; the last rule has no
conditions, so every item gets a decision. Rules are loaded and checked by :mod:`pipeline.rules`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from fnmatch import fnmatchcase

from medroute.records import DicomRecord, Hl7Record, RoutingDecision
from pipeline.classify import Classification
from pipeline.extract import ExtractedText, component_separator, message_type

EXTRACTION_FAILED = "extraction_failed"


@dataclass(frozen=True)
class RouteFacts:
    """What rules may look at: metadata of the item and, when it was classified, its classification.

    For DICOM, ``message_type`` is ``DICOM^<modality>``, ``sending_application`` the calling AE
    title, ``sending_facility`` empty and ``has_text`` false; ``modality`` and ``body_part`` are
    empty for HL7.
    """

    kind: str
    message_type: str  # MSH-9 with "^" separators; DICOM^CR for a CR image
    sending_application: str
    sending_facility: str
    has_text: bool
    label: str | None = None
    confidence: float | None = None
    below_threshold: bool | None = None
    modality: str = ""  # (0008,0060), upper case
    body_part: str = ""  # (0018,0015) Body Part Examined, upper case


@dataclass(frozen=True)
class Rule:
    """One routing rule. ``None`` means "no condition"; tuples hold alternatives (any may match)."""

    name: str
    destinations: tuple[str, ...]
    kind: tuple[str, ...] | None = None
    message_type: tuple[str, ...] | None = None  # globs: "ORU^R01*"
    label: tuple[str, ...] | None = None
    min_confidence: float | None = None  # inclusive
    max_confidence: float | None = None  # inclusive
    below_threshold: bool | None = None
    has_text: bool | None = None
    sending_application: tuple[str, ...] | None = None  # globs on HD.1 or the whole field
    sending_facility: tuple[str, ...] | None = None
    modality: tuple[str, ...] | None = None  # globs, case-insensitive: "CR", "D?"
    body_part: tuple[str, ...] | None = None  # globs, case-insensitive: "CHEST", "*SPINE"
    line: int = 0  # where the rule starts in its file, for messages

    @property
    def is_default(self) -> bool:
        return all(getattr(self, name) is None for name in CONDITIONS)

    def matches(self, facts: RouteFacts) -> bool:
        if self.kind is not None and facts.kind not in self.kind:
            return False
        if self.message_type is not None and not _glob_any(facts.message_type, self.message_type):
            return False
        if self.label is not None and facts.label not in self.label:
            return False
        if self.min_confidence is not None and (facts.confidence is None or facts.confidence < self.min_confidence):
            return False
        if self.max_confidence is not None and (facts.confidence is None or facts.confidence > self.max_confidence):
            return False
        if self.below_threshold is not None and facts.below_threshold is not self.below_threshold:
            return False
        if self.has_text is not None and facts.has_text is not self.has_text:
            return False
        if self.modality is not None and not _glob_any(facts.modality.upper(), [p.upper() for p in self.modality]):
            return False
        if self.body_part is not None and not _glob_any(facts.body_part.upper(), [p.upper() for p in self.body_part]):
            return False
        return _hd_matches(facts.sending_application, self.sending_application) and _hd_matches(
            facts.sending_facility, self.sending_facility
        )


CONDITIONS = tuple(f.name for f in fields(Rule) if f.name not in ("name", "destinations", "line"))


@dataclass(frozen=True)
class Rules:
    """An ordered rule list ending in a default rule; ``source`` names where it was read from."""

    rules: tuple[Rule, ...]
    source: str = "<rules>"

    def __post_init__(self) -> None:
        if not self.rules or not self.rules[-1].is_default:
            raise ValueError(f"{self.source}: the last rule must be a default rule without conditions")


@dataclass(frozen=True)
class RouteResult:
    rule_name: str
    destinations: list[str]


def route(facts: RouteFacts, rules: Rules) -> RouteResult:
    """The first rule that matches (the default rule at the latest)."""
    rule = next(rule for rule in rules.rules if rule.matches(facts))
    return RouteResult(rule.name, list(rule.destinations))


def hl7_facts(record: Hl7Record, extracted: ExtractedText, classification: Classification | None) -> RouteFacts:
    separator = component_separator(record)
    return RouteFacts(
        kind=record.kind,
        message_type=message_type(record),
        sending_application=_normalized_hd(record.sending_application, separator),
        sending_facility=_normalized_hd(record.sending_facility, separator),
        has_text=extracted.has_text,
        label=classification.label if classification else None,
        confidence=classification.confidence if classification else None,
        below_threshold=classification.below_threshold if classification else None,
    )


def dicom_message_type(record: DicomRecord) -> str:
    """``DICOM^<modality>`` (``DICOM^CR``), or ``DICOM`` when the modality is not given."""
    modality = record.modality.strip().upper()
    return f"DICOM^{modality}" if modality else "DICOM"


def dicom_facts(record: DicomRecord, classification: Classification | None) -> RouteFacts:
    """For an image without a classification the decision rests on the metadata alone."""
    return RouteFacts(
        kind=record.kind,
        message_type=dicom_message_type(record),
        sending_application=record.calling_ae.strip(),
        sending_facility="",
        has_text=False,
        label=classification.label if classification else None,
        confidence=classification.confidence if classification else None,
        below_threshold=classification.below_threshold if classification else None,
        modality=record.modality.strip().upper(),
        body_part=record.body_part.strip().upper(),
    )


UPLOAD_MESSAGE_TYPES = {"hl7": "DOCUMENT", "dicom": "IMAGE"}


def upload_facts(kind: str, classification: Classification | None, has_text: bool = False) -> RouteFacts:
    """A document or picture given on its own (an upload to the web API: text, PDF, PNG/JPEG), without
    message metadata: decided as the text of an HL7 report (``kind`` hl7, message type ``DOCUMENT``) or
    an image (``kind`` dicom, message type ``IMAGE``, no modality) would be, by the same rules."""
    return RouteFacts(
        kind=kind,
        message_type=UPLOAD_MESSAGE_TYPES[kind],
        sending_application="",
        sending_facility="",
        has_text=has_text,
        label=classification.label if classification else None,
        confidence=classification.confidence if classification else None,
        below_threshold=classification.below_threshold if classification else None,
    )


def decide(
    message_id: str, facts: RouteFacts, classification: Classification | None, rules: Rules, reason: str | None = None
) -> RoutingDecision:
    """The routing decision for one item (``reason``: e.g. ``extraction_failed``)."""
    result = route(facts, rules)
    return RoutingDecision(
        message_id=message_id,
        kind=facts.kind,
        message_type=facts.message_type,
        model=classification.model if classification else None,
        label=facts.label,
        confidence=facts.confidence,
        rule=result.rule_name,
        destinations=result.destinations,
        reason=reason,
    )


def _glob_any(value: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(value, pattern) for pattern in patterns)


def _hd_matches(value: str, patterns: tuple[str, ...] | None) -> bool:
    """A hierarchic designator (MSH-3/MSH-4) matches on its namespace id or as a whole."""
    if patterns is None:
        return True
    return _glob_any(value.split("^", 1)[0], patterns) or _glob_any(value, patterns)


def _normalized_hd(value: str, separator: str) -> str:
    """MSH-3/MSH-4 with "^" between components, like the message type."""
    return value.strip().replace(separator, "^")
