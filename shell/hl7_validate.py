"""``medroute hl7 validate FILE...``: check HL7 v2 files the way the MLLP listener's strict mode would.

For integration engineers on-boarding a sender: each message of each file is decoded by its MSH-18,
read by the listener's reader (:func:`formats.hl7.message.read_message`) and, when that accepts it,
checked by hl7apy's strict validation (:mod:`formats.hl7.validate`). A file may hold one message or
several, each starting with an MSH segment, with CR, LF or CRLF segment endings; MLLP framing bytes
(0x0B, 0x1C) and HL7 batch envelope segments (FHS, BHS, BTS, FTS) are skipped.

What is printed carries no field values: the file name, the message number, MSH-10, MSH-9 and the
reasons, which are fixed texts and element names (hl7apy quotes values; they are left out). The first
failure of a message is reported, as the listener would answer it.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from formats.hl7 import charsets, validate
from formats.hl7.errors import MessageError
from formats.hl7.message import MshHeader, read_header, read_message

_FRAMING = bytes.maketrans(b"\x0b\x1c", b"\r\r")  # MLLP start and end blocks become segment endings
_BATCH_SEGMENT = re.compile(rb"(?:\A|(?<=[\r\n]))(?:FHS|BHS|BTS|FTS)[^\r\n]*")
_MESSAGE_START = re.compile(rb"(?:\A|(?<=[\r\n]))MSH")
_BLANK = b" \t\r\n"

EXIT_VALID, EXIT_FINDINGS, EXIT_UNREADABLE = 0, 1, 2


@dataclass(frozen=True)
class Finding:
    reason: str  # the listener's reason code, e.g. "not_conformant", "unknown_charset"
    detail: str  # fixed text and element names only


@dataclass(frozen=True)
class Result:
    file: str
    message: int  # 1-based position in the file
    control_id: str  # MSH-10
    message_type: str  # MSH-9, components joined with "^"
    findings: list[Finding] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.findings

    def line(self) -> str:
        verdict = "; ".join(f"{f.reason}: {f.detail}" for f in self.findings) or "valid"
        return f"{self.file} #{self.message} {self.control_id or '-'} {self.message_type or '-'}: {verdict}"

    def as_json(self) -> str:
        return json.dumps({**asdict(self), "valid": self.valid})


def split_messages(data: bytes) -> list[bytes]:
    """The messages of a file's bytes, each from its MSH on. Text before the first MSH that is not blank
    is kept as a message of its own, so that it is reported rather than silently dropped."""
    data = data.translate(_FRAMING).lstrip(_BLANK)
    bom = charsets.UTF8_BOM if data.startswith(charsets.UTF8_BOM) else b""
    data = _BATCH_SEGMENT.sub(b"", data[len(bom) :])
    starts = [m.start() for m in _MESSAGE_START.finditer(data)]
    bounds = [0, *starts] if not starts or starts[0] else starts
    chunks = [data[a:b] for a, b in zip(bounds, [*bounds[1:], len(data)], strict=True)]
    messages = [c for c in chunks if c.strip(_BLANK)]
    if messages and bom:
        messages[0] = bom + messages[0]
    return messages


def check_message(raw: bytes) -> tuple[MshHeader, list[Finding]]:
    """MSH of one message and what the listener (strict mode) would find wrong with it; [] if nothing."""
    try:
        text = charsets.decode(raw, fallback=None).text  # strict mode: no guessing at undeclared bytes
    except MessageError as exc:
        latin = raw.removeprefix(charsets.UTF8_BOM).decode("latin-1")  # MSH is ASCII: readable anyway
        return read_header(latin), [Finding(exc.reason.code, exc.detail)]
    try:
        message = read_message(text)
    except MessageError as exc:
        return read_header(text), [Finding(exc.reason.code, exc.detail)]
    try:
        validate.validate(message)
    except MessageError as exc:
        return message.header, [Finding(exc.reason.code, exc.detail)]
    return message.header, []


def check_file(path: str) -> list[Result]:
    """Every message of a file; raises ``OSError`` or ``ValueError`` when it cannot be read or holds none."""
    messages = split_messages(Path(path).read_bytes())
    if not messages:
        raise ValueError("holds no HL7 message")
    results = []
    for number, raw in enumerate(messages, start=1):
        header, findings = check_message(raw)
        results.append(Result(path, number, header.control_id, header.standard_message_type, findings))
    return results


def run(paths: list[str], as_json: bool = False, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Check files and print one line (or JSON object) per message; the exit status of the verb."""
    out, err = out or sys.stdout, err or sys.stderr
    status = EXIT_VALID
    for path in paths:
        try:
            results = check_file(path)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(f"medroute hl7 validate: {path}: unreadable: {reason}", file=err)
            status = EXIT_UNREADABLE
            continue
        for result in results:
            print(result.as_json() if as_json else result.line(), file=out)
            if not result.valid and status == EXIT_VALID:
                status = EXIT_FINDINGS
    return status
