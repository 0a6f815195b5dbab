"""The clinical text of an HL7 v2 message, as the document classifier reads it.

What is read, in segment order, one line per field repetition, joined with newlines:

* ``OBX-5`` where ``OBX-2`` (value type) is ``TX``, ``FT`` or ``ST``: report lines of ORU results and
  the document body of MDM messages (the OBX segments after TXA);
* ``NTE-3`` comments.

Escape sequences are turned back into text with the delimiters the message's own MSH declares and
its character set (see :mod:`pipeline.escapes`: ``\\.br\\`` is a line break, ``\\F\\`` a field
separator, ``\\X..\\`` hex data...). Z-segments and field repetitions are accepted anywhere.

What is not read: coded or structured OBX values (``CE``, ``CWE``, ``CNE``, ``NM``, ``SN``, dates...),
OBX without a value type, encapsulated documents (``ED``, e.g. base64 PDF) and reference pointers
(``RP``); TXA itself (document metadata: type code, status, authors); OBR (order codes, reason for
study); PID, PV1 and the other segments that carry names and identifiers; Z-segments. A message
without such text (ADT, ORM, SIU, most lab results) is routed on its message type alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from medroute.records import Hl7Record
from pipeline.escapes import unescape
from pipeline.hl7parse import ParsedMessage, ParserName, Segment, parse

TEXT_VALUE_TYPES = frozenset({"TX", "FT", "ST"})
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ExtractedText:
    text: str  # "" when the message carries no clinical text
    sources: list[str]  # the fields the text came from, e.g. ["OBX-5", "NTE-3"]
    parse: ParserName  # "hl7apy", or "fallback" when hl7apy could not read the message

    @property
    def has_text(self) -> bool:
        return bool(self.text)


def extract_text(record: Hl7Record) -> ExtractedText:
    """Clinical text of a stored message (raises ``UnicodeDecodeError`` if its bytes do not decode)."""
    return text_of(parse(record.text()), record.encoding)


def text_of(message: ParsedMessage, encoding: str) -> ExtractedText:
    lines: list[str] = []
    sources: list[str] = []
    for segment in message.segments:
        source, values = _text_field(segment, message.delimiters.component)
        for value in values:
            line = unescape(value, message.delimiters, encoding).rstrip()
            lines.append(line)
            if line.strip() and source not in sources:
                sources.append(source)
    return ExtractedText("\n".join(lines).strip(), sources, message.parser)


def _text_field(segment: Segment, component: str) -> tuple[str, list[str]]:
    if segment.name == "OBX" and segment.first(2, component).upper() in TEXT_VALUE_TYPES:
        return "OBX-5", segment.repetitions(5)
    if segment.name == "NTE":
        return "NTE-3", segment.repetitions(3)
    return "", []


def component_separator(record: Hl7Record) -> str:
    """The sender's component separator (MSH-2), read from the raw bytes: MSH is ASCII."""
    head = record.raw.lstrip(_UTF8_BOM + b" \t\r\n")
    return chr(head[4]) if head.startswith(b"MSH") and len(head) > 4 else "^"


def message_type(record: Hl7Record) -> str:
    """MSH-9 with ``^`` between components whatever the sender's delimiters, e.g. ``ORU^R01^ORU_R01``."""
    return record.message_type.strip().replace(component_separator(record), "^")


def message_kind(record: Hl7Record) -> str:
    """The message code of MSH-9, e.g. ``ADT``, ``ORU``, ``MDM``, ``ORM``, ``SIU``."""
    return message_type(record).split("^", 1)[0].strip().upper()
