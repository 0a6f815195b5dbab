"""The worker's pre-2026-11 HL7 reading (hl7apy), kept ONLY as the reference of the parity tests.

Until 2026-11 the worker read a message with hl7apy (``parse_message``, tolerant validation, no group
building) and, where hl7apy refused a message (a version it does not know such as 2.9, a segment name it
rejects...), with a plain segment splitter; then it took the text of OBX-5 (OBX-2 ``TX``/``FT``/``ST``)
and NTE-3. ``formats.hl7`` replaced it (hl7apy builds a whole element tree, 6-25 ms a message); the
parity tests check that the new reader extracts the same text. Production code must never import this
module: it is slow and lives under ``tests/`` on purpose.

Adapted from the former ``pipeline/hl7parse.py`` and ``pipeline/extract.py``; escape sequences are
turned into text with today's :func:`formats.hl7.escapes.unescape`, which is the old function unchanged
(only its delimiter type moved), so that the comparison is about reading the structure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Element, Field, SubComponent
from hl7apy.parser import parse_message

from formats.hl7 import delimiters as new_delimiters
from formats.hl7.escapes import unescape

ParserName = Literal["hl7apy", "fallback"]
TEXT_VALUE_TYPES = frozenset({"TX", "FT", "ST"})


@dataclass(frozen=True)
class Delimiters:
    """The separators MSH-1 and MSH-2 declare (HL7's defaults where MSH-2 is short)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str | None = "\\"
    subcomponent: str = "&"
    truncation: str | None = None

    def as_new(self) -> new_delimiters.Delimiters:
        """The same delimiters in today's type ("" for an absent escape or truncation character)."""
        return new_delimiters.Delimiters(
            self.field, self.component, self.repetition, self.escape or "", self.subcomponent, self.truncation or ""
        )


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
    except Exception:  # hl7apy raises many types; any of them meant "use the fallback"
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
    """The text of one field repetition as it was on the wire (hl7apy's ``to_er7()`` re-escapes lone
    escape characters, so the leaves' values are joined instead)."""
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


@dataclass(frozen=True)
class ReferenceText:
    text: str  # what the old worker handed to the classifier
    sources: list[str]  # "OBX-5", "NTE-3", in order of first appearance
    parser: ParserName  # which of the old parsers read the message


def reference_text(text: str, encoding: str) -> ReferenceText:
    """The clinical text the old worker extracted from a decoded message (no ED documents: it read none)."""
    parsed = parse(text)
    delimiters = parsed.delimiters.as_new()
    lines: list[str] = []
    sources: list[str] = []
    for segment in parsed.segments:
        if segment.name == "OBX" and segment.first(2, delimiters.component).upper() in TEXT_VALUE_TYPES:
            source, values = "OBX-5", segment.repetitions(5)
        elif segment.name == "NTE":
            source, values = "NTE-3", segment.repetitions(3)
        else:
            continue
        for value in values:
            line = unescape(value, delimiters, encoding).rstrip()
            lines.append(line)
            if line.strip() and source not in sources:
                sources.append(source)
    return ReferenceText("\n".join(lines).strip(), sources, parsed.parser)
