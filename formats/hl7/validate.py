"""Strict conformance check with hl7apy (``MEDROUTE_MLLP_STRICT=1``), off the fast path by default.

hl7apy builds a full element tree (~80 msg/s), so it runs only where a site asks for it, and in a
worker thread so that other connections keep being served meanwhile. Known hl7apy limits apply (e.g.
its v2.3.1 ORM_O01 definition wants an RQD choice that most senders never send).
"""

from __future__ import annotations

import re

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from formats.hl7.errors import NOT_CONFORMANT, MessageError
from formats.hl7.message import Message

# hl7apy quotes field values in many of its messages ("NOTADATE is not an HL7 valid date value"), and
# those values can be PHI. Only its fixed phrases and element names (PID_7, TXA.TXA_12) are kept.
_PHRASES = (
    "Missing required child",
    "Unknown element found",
    "Invalid element found",
    "Invalid children detected",
    "Child limit exceeded",
    "is not an HL7 valid date value",
    "max limit",
)
_ELEMENT = re.compile(r"\b[A-Z][A-Z0-9]{2}(?:_[A-Z0-9]+)+(?:\.[A-Z][A-Z0-9_]*)*\b")


def describe(exc: Exception) -> str:
    """A PHI-free description of an hl7apy failure."""
    text = str(exc)
    parts = [p for p in _PHRASES if p in text]
    parts += list(dict.fromkeys(_ELEMENT.findall(text)))[:5]
    return f"hl7apy {type(exc).__name__}" + (f": {' '.join(parts)}" if parts else "")


def validate(message: Message) -> None:
    """Raise :class:`MessageError` (``not_conformant``) unless hl7apy accepts the message strictly."""
    try:
        parsed = parse_message(message.normalized(), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        parsed.validate()
    except Exception as exc:  # hl7apy signals non-conformance with many exception types
        raise MessageError(NOT_CONFORMANT, describe(exc)) from None
