"""Why an inbound HL7 message is refused, and how that reason is answered.

Each :class:`Reason` carries its machine-readable code (the dead-letter ``reason``), the kind of
negative acknowledgement it earns and the HL7 table 0357 error code for ERR-3. The ACK code follows
the standard's split: *reject* (AR/CR) when the message header or structure cannot be processed or is
not supported, *error* (AE/CE) when the header is fine but the content is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    """What the listener did with a message; ``ack.ack_code`` turns it into AA/AE/AR or CA/CE/CR."""

    ACCEPT = "accept"
    ERROR = "error"
    REJECT = "reject"


@dataclass(frozen=True)
class Reason:
    code: str
    outcome: Outcome
    hl7_error: int  # HL7 table 0357
    text: str  # short, fixed text for MSA-3 (never message content)


# HL7 table 0357 descriptions, written into ERR-3.2.
HL7_ERROR_TEXT = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    104: "Value too long",
    200: "Unsupported message type",
    201: "Unsupported event code",
    203: "Unsupported version id",
    207: "Application internal error",
}

_R, _E = Outcome.REJECT, Outcome.ERROR

EMPTY_MESSAGE = Reason("empty_message", _R, 100, "Empty message")
NO_MSH = Reason("no_msh", _R, 100, "Message does not start with an MSH segment")
BAD_DELIMITERS = Reason("bad_delimiters", _R, 102, "Invalid encoding characters in MSH-1/MSH-2")
BAD_SEGMENT = Reason("bad_segment_name", _R, 100, "Invalid segment name")
BATCH = Reason("batch_not_supported", _R, 200, "HL7 batch files (FHS/BHS) are not accepted")
MISSING_TYPE = Reason("missing_message_type", _R, 101, "MSH-9 message type is required")
BAD_TYPE = Reason("bad_message_type", _R, 102, "MSH-9 message type is malformed")
MISSING_CONTROL_ID = Reason("missing_control_id", _R, 101, "MSH-10 message control id is required")
UNSUPPORTED_VERSION = Reason("unsupported_version", _R, 203, "MSH-12 version is not HL7 v2")
UNKNOWN_CHARSET = Reason("unknown_charset", _R, 103, "MSH-18 character set is not supported")
UNDECODABLE = Reason("undecodable", _E, 102, "Bytes do not match the declared character set")
CONTROL_CHARS = Reason("control_characters", _E, 102, "Message contains control characters")
NOT_CONFORMANT = Reason("not_conformant", _E, 102, "Message does not conform to the HL7 definition")
FRAME_TOO_LARGE = Reason("frame_too_large", _R, 104, "Message exceeds the size limit")
STORAGE_UNAVAILABLE = Reason("storage_unavailable", _R, 207, "Storage unavailable, retry later")
# Framing problems that cannot be answered: there is no complete message to acknowledge.
TRUNCATED = Reason("truncated_frame", _R, 100, "Frame ended before its end block")
JUNK = Reason("junk_before_start_block", _R, 100, "Bytes outside an MLLP frame")


class MessageError(Exception):
    """A message refused for ``reason``; ``detail`` explains without quoting content (no PHI)."""

    def __init__(self, reason: Reason, detail: str = "", location: str = "") -> None:
        super().__init__(detail or reason.text)
        self.reason = reason
        self.detail = detail or reason.text
        self.location = location  # ERR-2 as "SEG^seq^field", "" when not about one field
