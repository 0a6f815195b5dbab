"""An HL7 v2 message as a list of segments whose fields keep their wire text (still escaped).

The structured parse is hl7apy's (tolerant validation, no group building, the delimiters MSH
declares). A message that the listener accepted but hl7apy refuses (an HL7 version it does not
know, such as 2.9; a segment name it rejects; a byte order mark) is split by a plain segment
splitter instead, and the result says which parser read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import structlog
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Element, Field, SubComponent
from hl7apy.parser import parse_message

log = structlog.get_logger(__name__)

ParserName = Literal["hl7apy", "fallback"]


@dataclass(frozen=True)
class Delimiters:
    """The separators MSH-1 and MSH-2 declare (HL7's defaults where MSH-2 is short)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str | None = "\\"
    subcomponent: str = "&"
    truncation: str | None = None


@dataclass(frozen=True)
class Segment:
    """One segment: ``fields[n]`` holds the repetitions of field n as wire text (escapes kept)."""

    name: str
    fields: dict[int, list[str]] = field(default_factory=dict)

    def repetitions(self, position: int) -> list[str]:
        return self.fields.get(position, [])

    def first(self, position: int, component: str) -> str:
        """The first component of the first repetition of a field, e.g. OBX-2's value type."""
        values = self.repetitions(position)
        return values[0].split(component, 1)[0].strip() if values else ""


@dataclass(frozen=True)
class ParsedMessage:
    segments: list[Segment]
    delimiters: Delimiters
    parser: ParserName


def normalize(text: str) -> str:
    """CR segment endings, as HL7 parsers expect; no byte order mark or surrounding blank space."""
    return text.lstrip("\ufeff \t\r\n").replace("\r\n", "\r").replace("\n", "\r").rstrip("\r")


def delimiters_of(text: str) -> Delimiters:
    """Delimiters from the MSH segment at the start of a normalized message."""
    if not text.startswith("MSH") or len(text) < 4:
        return Delimiters()
    field_sep = text[3]
    end = text.find(field_sep, 4)
    chars = text[4 : end if end != -1 else len(text)].split("\r", 1)[0]
    defaults = Delimiters()
    return Delimiters(
        field=field_sep,
        component=chars[0] if len(chars) > 0 else defaults.component,
        repetition=chars[1] if len(chars) > 1 else defaults.repetition,
        escape=chars[2] if len(chars) > 2 else None,
        subcomponent=chars[3] if len(chars) > 3 else defaults.subcomponent,
        truncation=chars[4] if len(chars) > 4 else None,
    )


def parse(text: str) -> ParsedMessage:
    """Segments of a decoded message: hl7apy's parse, or the plain splitter where hl7apy fails."""
    text = normalize(text)
    delimiters = delimiters_of(text)
    try:
        segments = _parse_hl7apy(text, delimiters)
    except Exception as exc:  # hl7apy raises many types; any of them means "use the fallback"
        log.warning("hl7_parse_fallback", error=type(exc).__name__)
        return ParsedMessage(_split(text, delimiters), delimiters, "fallback")
    return ParsedMessage(segments, delimiters, "hl7apy")


def _parse_hl7apy(text: str, delimiters: Delimiters) -> list[Segment]:
    message = parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
    segments = []
    for child in message.children:
        fields: dict[int, list[str]] = {}
        for element in child.children:
            position = _position(element.name)
            if position is not None:
                fields.setdefault(position, []).append(_wire(element, delimiters))
        segments.append(Segment(child.name.upper(), fields))
    return segments


def _position(name: str | None) -> int | None:
    """Field number from an hl7apy element name such as ``OBX_5`` or ``ZPI_2``."""
    suffix = (name or "").rsplit("_", 1)[-1]
    return int(suffix) if suffix.isdigit() else None


def _wire(element: Element, delimiters: Delimiters) -> str:
    """The text of one field repetition as it was on the wire.

    hl7apy's ``to_er7()`` re-escapes lone escape characters (``\\.br\\`` comes back as
    ``\\E\\.br\\E\\``), which would lose formatting, so the leaves' values are joined instead.
    """
    if isinstance(element, SubComponent):
        value = element.value
        return "" if value is None else str(getattr(value, "value", value))
    separator = delimiters.component if isinstance(element, Field) else delimiters.subcomponent
    return separator.join(_wire(child, delimiters) for child in element.children)


def _split(text: str, delimiters: Delimiters) -> list[Segment]:
    segments = []
    for line in text.split("\r"):
        if not line.strip():
            continue
        values = line.split(delimiters.field)
        name = values[0].strip().upper()
        if name == "MSH":  # MSH-1 is the field separator itself, so MSH-n is values[n - 1]
            values = [name, delimiters.field, *values[1:]]
        fields = {
            n: value.split(delimiters.repetition) if not (name == "MSH" and n <= 2) else [value]
            for n, value in enumerate(values[1:], start=1)
            if value
        }
        segments.append(Segment(name, fields))
    return segments
