"""Strict conformance check with hl7apy (``MEDROUTE_MLLP_STRICT=1``, ``medroute hl7 validate``), off the fast path.

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
    "is not correct for",
    "is not an HL7 valid date value",
    "is not an HL7 valid NM value",
    "is not an HL7 valid SI value",
    "exceed the max length",
    "max limit",
    "is not supported",
    "Invalid name for",
    "No child named",
    "Cannot instantiate an unknown Element",
)
_ELEMENT = re.compile(r"\b[A-Z][A-Z0-9]{1,2}(?:_[A-Z0-9]+)+(?:\.[A-Z][A-Z0-9_]*)*\b")
# Element names are taken only from the failures whose text names elements and never quotes a value: a
# value such as MRN_100234 in "The value MRN_100234 exceed the max length" looks like an element name.
_NAMING_FAILURES = frozenset({"ValidationError", "MaxChildLimitReached", "ChildNotFound", "InvalidName"})


def describe(exc: Exception) -> str:
    """A PHI-free description of an hl7apy failure: its type, fixed phrases and element names."""
    text = str(exc)
    kind = type(exc).__name__
    parts = [p for p in _PHRASES if p in text]
    if kind in _NAMING_FAILURES:
        parts += list(dict.fromkeys(_ELEMENT.findall(text)))[:5]
    return f"hl7apy {kind}" + (f": {' '.join(parts)}" if parts else "")


def validate(message: Message) -> None:
    """Raise :class:`MessageError` (``not_conformant``) unless hl7apy accepts the message strictly."""
    try:
        parsed = parse_message(message.normalized(), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        parsed.validate()
    except Exception as exc:  # hl7apy signals non-conformance with many exception types
        raise MessageError(NOT_CONFORMANT, describe(exc)) from None
