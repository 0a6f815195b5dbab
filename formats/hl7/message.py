"""Reading an HL7 v2 message without building an element tree: the one HL7 reader of the house.

The listener, the worker, replay and batch runs all read messages here. Segments are split on CR, LF or
CRLF; fields, repetitions and components are split on the delimiters MSH declares; values are returned
as sent (escape sequences intact: :mod:`formats.hl7.escapes` turns them into text). hl7apy, which
builds a full element tree at 6-25 ms a message, is used only where its validation is the point
(:mod:`formats.hl7.validate`).

Two entry points:

* :func:`read_message` checks what the listener's accept/reject decision needs (MSH first, delimiters,
  segment names, no batch, MSH-9/10/12, no control characters) and raises :class:`MessageError`;
* :func:`read_lenient` never raises: for records stored by other producers or files in a batch run.
  It skips blank lines and reads what it can.

:func:`read_header` never raises either: it answers messages too broken to parse.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from formats.hl7.delimiters import Delimiters, lenient_delimiters, read_delimiters, valid_delimiter
from formats.hl7.errors import (
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
_LEADING = "\ufeff \t\r\n"  # a byte order mark or blank space before MSH
DEFAULT_DELIMITERS = Delimiters()


@dataclass(frozen=True)
class MshHeader:
    """MSH fields as sent (raw field text, components intact); "" where absent."""

    delimiters: Delimiters = DEFAULT_DELIMITERS
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
    def standard_message_type(self) -> str:
        """MSH-9 with HL7's ``^`` between components, whatever the sender's delimiters."""
        return "^".join(self.message_type.strip().split(self.delimiters.component))

    @property
    def enhanced_mode(self) -> bool:
        """HL7 enhanced acknowledgement mode: MSH-15 or MSH-16 is valued."""
        return bool(self.accept_ack_type.strip() or self.application_ack_type.strip())


class Segment:
    """One segment split into fields: ``field(n)`` is HL7's field n (MSH-1 is the separator itself).

    A plain slotted class, not a dataclass: the worker makes one for every OBX and NTE it reads.
    """

    __slots__ = ("delimiters", "name", "values")

    def __init__(self, name: str, values: list[str], delimiters: Delimiters) -> None:
        self.name = name
        self.values = values  # the segment split on the field separator; values[0] is the name
        self.delimiters = delimiters

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, {len(self.values) - 1} fields)"

    def field(self, position: int) -> str:
        index = position - 1 if self.name == "MSH" else position
        return self.values[index] if 0 < index < len(self.values) else ""

    def repetitions(self, position: int) -> list[str]:
        """Field ``position``'s repetitions as wire text; [] when the field is empty or absent."""
        value = self.field(position)
        if not value:
            return []
        if self.name == "MSH" and position <= 2:
            return [value]
        return value.split(self.delimiters.repetition)

    def component(self, position: int, index: int = 1) -> str:
        """Component ``index`` (1-based) of the field's first repetition, stripped: e.g. OBX-2.1."""
        first = self.field(position).split(self.delimiters.repetition, 1)[0]
        parts = first.split(self.delimiters.component)
        return parts[index - 1].strip() if index <= len(parts) else ""


@dataclass(frozen=True)
class Message:
    delimiters: Delimiters
    segments: tuple[str, ...]  # the segments' text, without their endings; blank lines dropped

    @cached_property
    def header(self) -> MshHeader:
        """MSH's fields (empty when the first segment is not MSH); read on first use."""
        first = self.segments[0] if self.segments else ""
        return _header(first, self.delimiters) if first.startswith("MSH") else MshHeader(self.delimiters)

    @property
    def patient_id(self) -> str | None:
        """PID-3, first repetition, first component; None when there is no PID or it is empty."""
        for segment in self.iter_segments("PID"):
            if len(segment.values) < 4:
                return None
            return segment.component(3) or None
        return None

    def iter_segments(self, *names: str) -> Iterator[Segment]:
        """The segments with one of ``names`` (all when none is given), in message order, split."""
        field = self.delimiters.field
        for text in self.segments:
            if text[3:4] == field or len(text) == 3:  # the usual case: the name is the first 3 characters
                name = text[:3].upper()
                if names and name not in names:
                    continue  # not split: most segments of a message are skipped here
                values = text.split(field)
            else:  # blank space around the name, or a name that is not 3 characters: split to find it
                values = text.split(field)
                name = values[0].strip().upper()
                if names and name not in names:
                    continue
            yield Segment(name, values, self.delimiters)

    def normalized(self) -> str:
        """The message with CR segment endings, as HL7 parsers expect it."""
        return "\r".join(self.segments) + "\r"


def _split_segments(text: str) -> list[str]:
    if "\n" in text:
        text = _LINE_ENDINGS.sub("\r", text)
    return [s for s in text.split("\r") if s]


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


def read_header(text: str) -> MshHeader:
    """Whatever MSH fields can be read, falling back to default delimiters; never raises."""
    if not text.startswith("MSH") or len(text) < 4:
        return MshHeader()
    try:
        delimiters = read_delimiters(text)
    except MessageError:
        delimiters = Delimiters(text[3]) if valid_delimiter(text[3]) else Delimiters()
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


def check_structure(text: str) -> tuple[Delimiters, list[str]]:
    """Segment-level validity (MSH first, delimiters, segment names, no batch); raises
    :class:`MessageError`. Works on a Latin-1 reading too, for messages whose charset failed."""
    if not text.strip():
        raise MessageError(EMPTY_MESSAGE, "the frame holds no message")
    if text[:3] in _BATCH_SEGMENTS:
        raise MessageError(BATCH, f"message starts with batch segment {text[:3]}", f"{text[:3]}^1")
    if not text.startswith("MSH"):
        raise MessageError(NO_MSH, "the first segment is not MSH")
    delimiters = read_delimiters(text)
    segments = _split_segments(text)
    _check_segments(segments, delimiters.field)
    return delimiters, segments


def read_message(text: str) -> Message:
    """Validate structure and header (the listener's accept decision); raises :class:`MessageError`."""
    delimiters, segments = check_structure(text)
    message = Message(delimiters, tuple(segments))
    _check_header(message.header)
    control = _CONTROL.search(text)
    if control:
        detail = f"control character U+{ord(control.group()):04X} at character {control.start()}"
        raise MessageError(CONTROL_CHARS, detail)
    return message


def read_lenient(text: str) -> Message:
    """The message as far as it can be read; never raises. A byte order mark or blank space before
    MSH is skipped, blank lines are dropped, segment names are not checked."""
    text = text.lstrip(_LEADING)
    segments = [s for s in _split_segments(text) if s.strip()]
    return Message(lenient_delimiters(text), tuple(segments))
