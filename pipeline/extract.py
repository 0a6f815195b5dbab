"""The clinical text of an HL7 v2 message, as the document classifier reads it.

What is read, in segment order, one line per field repetition, joined with newlines:

* ``OBX-5`` where ``OBX-2`` (value type) is ``TX``, ``FT`` or ``ST``: report lines of ORU results and
  the document body of MDM messages (the OBX segments after TXA);
* ``OBX-5`` where ``OBX-2`` is ``ED``: an embedded document (base64 PDF with a text layer, RTF, HTML,
  plain text; see :mod:`formats.hl7.encapsulated`), as many MDM feeds carry their reports only this way;
* ``NTE-3`` comments.

Escape sequences are turned back into text with the delimiters the message's own MSH declares and
its character set (see :mod:`formats.hl7.escapes`: ``\\.br\\`` is a line break, ``\\F\\`` a field
separator, ``\\X..\\`` hex data...). Z-segments and field repetitions are accepted anywhere.

An embedded document that cannot be read (bad base64, a corrupt PDF) is left out and named in
``failures``; the rest of the message is still read and the decision says ``extraction_failed``.

What is not read: coded or structured OBX values (``CE``, ``CWE``, ``CNE``, ``NM``, ``SN``, dates...),
OBX without a value type and reference pointers (``RP``); TXA itself (document metadata: type code,
status, authors); OBR (order codes, reason for study); PID, PV1 and the other segments that carry names
and identifiers; Z-segments. A message without such text (ADT, ORM, SIU, most lab results) is routed on
its message type alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from formats.documents import DocumentError
from formats.hl7.encapsulated import document_text
from formats.hl7.escapes import unescape
from formats.hl7.message import Message, read_lenient
from medroute.records import Hl7Record

TEXT_VALUE_TYPES = frozenset({"TX", "FT", "ST"})
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ExtractedText:
    text: str  # "" when the message carries no clinical text
    sources: list[str]  # the fields the text came from, e.g. ["OBX-5", "NTE-3", "OBX-5 ED pdf"]
    failures: list[str] = field(default_factory=list)  # embedded documents not read, e.g. "OBX-5 ED: ..."

    @property
    def has_text(self) -> bool:
        return bool(self.text)


def extract_text(record: Hl7Record) -> ExtractedText:
    """Clinical text of a stored message (raises ``UnicodeDecodeError`` if its bytes do not decode)."""
    return text_of(read_lenient(record.text()), record.encoding)


def text_of(message: Message, encoding: str) -> ExtractedText:
    delimiters = message.delimiters
    lines: list[str] = []
    sources: list[str] = []
    failures: list[str] = []

    def add(source: str, text: str) -> None:
        lines.append(text)
        if text.strip() and source not in sources:
            sources.append(source)

    for segment in message.iter_segments("OBX", "NTE"):
        if segment.name == "NTE":
            for value in segment.repetitions(3):
                add("NTE-3", unescape(value, delimiters, encoding).rstrip())
            continue
        value_type = segment.component(2).upper()
        if value_type in TEXT_VALUE_TYPES:
            for value in segment.repetitions(5):
                add("OBX-5", unescape(value, delimiters, encoding).rstrip())
        elif value_type == "ED":
            for value in segment.repetitions(5):
                try:
                    document = document_text(value, delimiters, encoding)
                except DocumentError as exc:  # messages describe the failure, never the content
                    failures.append(f"OBX-5 ED: {exc}")
                    continue
                if document is not None:
                    text, kind = document
                    add(f"OBX-5 ED {kind}", text.strip())
    return ExtractedText("\n".join(lines).strip(), sources, failures)


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
