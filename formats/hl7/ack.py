"""The HL7 acknowledgement a receiver sends back (MSH + MSA, and ERR when negative).

Original mode (MSH-15 and MSH-16 empty): AA / AE / AR. Enhanced mode (either valued): we send the
*accept* acknowledgement CA / CE / CR only, and only when MSH-15 asks for it (AL always, NE never, ER on
errors, SU on success; an unknown value is treated as AL). The *application* acknowledgement of MSH-16 is
the business of the application that finally consumes the message, not of this transport: we never
send one.

The ACK uses the incoming delimiters, version and MSH-18, swaps sender and receiver, gets a new control
id in MSH-10 and echoes the incoming MSH-10 in MSA-2. It follows what the incoming version defines, so
that a strict receiver accepts it:

* MSH-9 is ``ACK^<trigger>^ACK`` (``ACK^<trigger>`` before v2.3.1, which has no message structure); the
  trigger is empty when the incoming MSH-9 could not be read.
* MSA-3 carries a short text up to v2.6 (it is withdrawn in v2.7).
* ERR carries the HL7 table 0357 code (ERR-3), severity E (ERR-4), the location when known (ERR-2) and
  the explanation (ERR-8) from v2.5 on; before v2.5 ERR has only ERR-1, which gets location and code.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from formats.hl7.delimiters import DEFAULT_ENCODING_CHARACTERS
from formats.hl7.errors import HL7_ERROR_TEXT, Outcome, Reason
from formats.hl7.escapes import escape
from formats.hl7.message import MshHeader

_CODES = {
    Outcome.ACCEPT: ("AA", "CA"),
    Outcome.ERROR: ("AE", "CE"),
    Outcome.REJECT: ("AR", "CR"),
}
DEFAULT_VERSION = "2.5"
ACCEPTED_TEXT = "Message accepted"


def ack_code(outcome: Outcome, enhanced: bool) -> str:
    return _CODES[outcome][1 if enhanced else 0]


def should_answer(header: MshHeader, outcome: Outcome) -> bool:
    """Whether MSH-15 (enhanced mode) wants an accept acknowledgement for this outcome."""
    if not header.enhanced_mode:
        return True
    mode = header.accept_ack_type
    if mode == "NE":
        return False
    if mode == "ER":
        return outcome is not Outcome.ACCEPT
    if mode == "SU":
        return outcome is Outcome.ACCEPT
    return True


def _version_tuple(version_id: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version_id.split("."))
    except ValueError:
        return (2, 5)


def _err_segment(header: MshHeader, version: tuple[int, ...], reason: Reason, detail: str, location: str) -> str:
    d = header.delimiters
    code_text = HL7_ERROR_TEXT.get(reason.hl7_error, reason.text)
    if version < (2, 5):
        # ERR-1 (ELD): segment ^ sequence ^ field ^ code&text&table
        loc = [*location.split("^"), "", "", ""][:3]
        eld_code = d.subcomponent.join((str(reason.hl7_error), code_text, "HL70357"))
        return d.field.join(("ERR", d.component.join([*loc, eld_code])))
    error_code = d.component.join((str(reason.hl7_error), code_text, "HL70357"))
    fields = ["ERR", "", location.replace("^", d.component), error_code, "E", "", "", "", escape(detail, d)]
    return d.field.join(fields)


def build_ack(
    header: MshHeader,
    outcome: Outcome,
    reason: Reason | None = None,
    detail: str = "",
    location: str = "",
) -> str:
    """The ACK text (CR segment endings) for a message whose readable header is ``header``."""
    d = header.delimiters
    enhanced = header.enhanced_mode
    version = header.version or DEFAULT_VERSION
    number = _version_tuple(header.version_id or DEFAULT_VERSION)
    trigger = header.trigger_event
    if number < (2, 3, 1):
        message_type = d.component.join(("ACK", trigger)) if trigger else "ACK"
    else:
        message_type = d.component.join(("ACK", trigger, "ACK"))
    msh = [
        "MSH",
        d.encoding_characters or DEFAULT_ENCODING_CHARACTERS,
        header.receiving_application,
        header.receiving_facility,
        header.sending_application,
        header.sending_facility,
        datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000"),
        "",
        message_type,
        uuid.uuid4().hex[:20],
        header.processing_id or "P",
        version,
        "",
        "",
        "NE" if enhanced else "",
        "NE" if enhanced else "",
        "",
        header.charset,
    ]
    msa = ["MSA", ack_code(outcome, enhanced), header.control_id]
    if number < (2, 7):
        msa.append(escape(reason.text if reason else ACCEPTED_TEXT, d))
    segments = [d.field.join(msh).rstrip(d.field), d.field.join(msa)]
    if reason is not None and outcome is not Outcome.ACCEPT:
        segments.append(_err_segment(header, number, reason, detail or reason.text, location))
    return "\r".join(segments) + "\r"
