"""Fast-path reading of an HL7 v2 message: what the ACK, the Kafka key and the accept/reject decision
need, without building an element tree (hl7apy manages ~80 msg/s; this manages thousands).

Values are returned exactly as sent: escape sequences (``\\F\\``, ``\\X..\\``) and components stay intact.
Segments may end with CR, LF or CRLF. Only :class:`~listeners.mllp.errors.MessageError` escapes
:func:`parse`; :func:`read_header` never raises, for answering messages too broken to parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from listeners.mllp.errors import (
    BAD_DELIMITERS,
    BAD_SEGMENT,
    BAD_TYPE,
    BATCH,
    CONTROL_CHARS,
    EMPTY_MESSAGE,
    MISSING_CONTROL_ID,
    MISSING_TYPE,
    NO_MSH,
    UNSUPPORTED_VERSION,
    MessageError,
)

_SEGMENT_NAME = re.compile(r"[A-Z0-9]{3}\Z")
_MESSAGE_CODE = re.compile(r"[A-Z]{3}\Z")  # table 0076 codes are letters
_VERSION = re.compile(r"2(\.\d+){1,2}\Z")
# C0 controls other than TAB, LF and CR (segment endings), and DEL: never valid in HL7 text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LINE_ENDINGS = re.compile(r"\r\n|\n")
_BATCH_SEGMENTS = frozenset({"FHS", "BHS", "BTS", "FTS"})
DEFAULT_ENCODING_CHARACTERS = "^~\\&"


@dataclass(frozen=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""  # HL7 v2.7+ fifth encoding character

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as it must be written back."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


@dataclass(frozen=True)
class MshHeader:
    """MSH fields as sent (raw field text, components intact); "" where absent."""

    delimiters: Delimiters = Delimiters()
    sending_application: str = ""  # MSH-3
    sending_facility: str = ""  # MSH-4
    receiving_application: str = ""  # MSH-5
    receiving_facility: str = ""  # MSH-6
    message_type: str = ""  # MSH-9
    control_id: str = ""  # MSH-10
    processing_id: str = ""  # MSH-11
    version: str = ""  # MSH-12
    accept_ack_type: str = ""  # MSH-15
    application_ack_type: str = ""  # MSH-16
    charset: str = ""  # MSH-18

    def _component(self, value: str, index: int) -> str:
        parts = value.split(self.delimiters.component)
        return parts[index].strip() if index < len(parts) else ""

    @property
    def message_code(self) -> str:
        return self._component(self.message_type, 0)

    @property
    def trigger_event(self) -> str:
        return self._component(self.message_type, 1)

    @property
    def version_id(self) -> str:
        return self._component(self.version, 0)

    @property
    def enhanced_mode(self) -> bool:
        """HL7 enhanced acknowledgement mode: MSH-15 or MSH-16 is valued."""
        return bool(self.accept_ack_type.strip() or self.application_ack_type.strip())


@dataclass(frozen=True)
class ParsedMessage:
    header: MshHeader
    patient_id: str | None  # PID-3, first repetition, first component
    segments: tuple[str, ...]

    def normalized(self) -> str:
        """The message with CR segment endings, as HL7 parsers expect it."""
        return "\r".join(self.segments) + "\r"


def _valid_delimiter(char: str) -> bool:
    return len(char) == 1 and not char.isalnum() and char.isprintable() and not char.isspace()


def _delimiters(text: str) -> Delimiters:
    """Delimiters from MSH-1/MSH-2; raises for anything HL7 does not allow."""
    if len(text) < 8:
        raise MessageError(BAD_DELIMITERS, "MSH segment too short to hold MSH-1 and MSH-2", "MSH^1^2")
    field = text[3]
    end = text.find(field, 4)
    encoding = text[4:] if end < 0 else text[4:end]
    encoding = encoding.split("\r", 1)[0].split("\n", 1)[0]
    chars = field + encoding
    if not 4 <= len(encoding) <= 5:
        raise MessageError(BAD_DELIMITERS, f"MSH-2 has {len(encoding)} encoding characters, not 4 or 5", "MSH^1^2")
    if not all(_valid_delimiter(c) for c in chars):
        raise MessageError(BAD_DELIMITERS, "delimiters must be printable and not letters or digits", "MSH^1^1")
    if len(set(chars)) != len(chars):
        raise MessageError(BAD_DELIMITERS, "MSH-1 and MSH-2 delimiters must all differ", "MSH^1^2")
    return Delimiters(field, *encoding)


def _header(msh: str, delimiters: Delimiters) -> MshHeader:
    fields = msh.split(delimiters.field)

    def msh_field(n: int) -> str:  # MSH-1 is the separator itself, so MSH-n is fields[n - 1]
        return fields[n - 1] if n - 1 < len(fields) else ""

    return MshHeader(
        delimiters=delimiters,
        sending_application=msh_field(3),
        sending_facility=msh_field(4),
        receiving_application=msh_field(5),
        receiving_facility=msh_field(6),
        message_type=msh_field(9),
        control_id=msh_field(10).strip(),
        processing_id=msh_field(11),
        version=msh_field(12),
        accept_ack_type=msh_field(15).strip().upper(),
        application_ack_type=msh_field(16).strip().upper(),
        charset=msh_field(18).strip(),
    )


def _segments(text: str) -> list[str]:
    return [s for s in _LINE_ENDINGS.sub("\r", text).split("\r") if s]


def read_header(text: str) -> MshHeader:
    """Whatever MSH fields can be read, falling back to default delimiters; never raises."""
    if not text.startswith("MSH") or len(text) < 4:
        return MshHeader()
    try:
        delimiters = _delimiters(text)
    except MessageError:
        delimiters = Delimiters(text[3]) if _valid_delimiter(text[3]) else Delimiters()
    first = _LINE_ENDINGS.sub("\r", text).split("\r", 1)[0]
    return _header(first, delimiters)


def _check_segments(segments: list[str], field: str) -> None:
    for number, segment in enumerate(segments, start=1):
        name = segment[:3]
        if name in _BATCH_SEGMENTS:
            raise MessageError(BATCH, f"batch segment {name} at segment {number}", f"{name}^1")
        if not _SEGMENT_NAME.match(name) or (len(segment) > 3 and segment[3] != field):
            raise MessageError(BAD_SEGMENT, f"segment {number} does not start with a valid segment name")
        if name == "MSH" and number > 1:
            raise MessageError(BAD_SEGMENT, f"second MSH at segment {number}: one message per frame", "MSH^2")


def _check_header(header: MshHeader) -> None:
    if not header.message_type.strip(header.delimiters.component + " "):
        raise MessageError(MISSING_TYPE, "MSH-9 message type is empty", "MSH^1^9")
    if not _MESSAGE_CODE.match(header.message_code):
        raise MessageError(BAD_TYPE, "MSH-9.1 must be a 3 letter message code", "MSH^1^9")
    if not header.control_id:
        raise MessageError(MISSING_CONTROL_ID, "MSH-10 message control id is empty", "MSH^1^10")
    version = header.version_id
    if version and not _VERSION.match(version):
        raise MessageError(UNSUPPORTED_VERSION, "MSH-12 is not an HL7 v2.x version", "MSH^1^12")


def _patient_id(segments: list[str], delimiters: Delimiters) -> str | None:
    prefix = "PID" + delimiters.field
    for segment in segments:
        if segment.startswith(prefix):
            fields = segment.split(delimiters.field)
            if len(fields) < 4:
                return None
            first = fields[3].split(delimiters.repetition, 1)[0].split(delimiters.component, 1)[0]
            return first.strip() or None
    return None


def check_structure(text: str) -> tuple[Delimiters, list[str]]:
    """Segment-level validity (MSH first, delimiters, segment names, no batch); raises
    :class:`MessageError`. Works on a Latin-1 reading too, for messages whose charset failed."""
    if not text.strip():
        raise MessageError(EMPTY_MESSAGE, "the frame holds no message")
    if text[:3] in _BATCH_SEGMENTS:
        raise MessageError(BATCH, f"message starts with batch segment {text[:3]}", f"{text[:3]}^1")
    if not text.startswith("MSH"):
        raise MessageError(NO_MSH, "the first segment is not MSH")
    delimiters = _delimiters(text)
    segments = _segments(text)
    _check_segments(segments, delimiters.field)
    return delimiters, segments


def parse(text: str) -> ParsedMessage:
    """Validate structure and read the header and PID-3; raises :class:`MessageError`."""
    delimiters, segments = check_structure(text)
    header = _header(segments[0], delimiters)
    _check_header(header)
    control = _CONTROL.search(text)
    if control:
        detail = f"control character U+{ord(control.group()):04X} at character {control.start()}"
        raise MessageError(CONTROL_CHARS, detail)
    return ParsedMessage(header, _patient_id(segments, delimiters), tuple(segments))
