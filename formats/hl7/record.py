"""The stored envelope of one HL7 v2 message (:class:`~medroute.records.Hl7Record`), built in one place
for the listener, batch runs and benchmarks."""

from __future__ import annotations

from formats.hl7 import charsets
from formats.hl7.message import MshHeader, read_message
from medroute.records import Hl7Record, new_id


def hl7_record(
    raw: bytes,
    decoded: charsets.Decoded,
    header: MshHeader,
    *,
    peer: str,
    received_at: str,
    message_id: str | None = None,
) -> Hl7Record:
    """The record of a message already decoded and read (the raw bytes are kept unchanged)."""
    return Hl7Record(
        message_id=message_id or new_id(),
        raw=raw,
        charset=decoded.charset,
        encoding=decoded.codec,
        charset_assumed=decoded.assumed,
        received_at=received_at,
        peer=peer,
        sending_application=header.sending_application,
        sending_facility=header.sending_facility,
        receiving_application=header.receiving_application,
        receiving_facility=header.receiving_facility,
        # Stored with HL7's standard component separator, whatever the sender's delimiters.
        message_type=header.standard_message_type,
        control_id=header.control_id,
        version=header.version_id,
    )


def record_of_bytes(
    raw: bytes,
    *,
    peer: str = "",
    received_at: str = "",
    message_id: str | None = None,
    default_charset: str = "ASCII",
    fallback_charset: str | None = charsets.DEFAULT_FALLBACK,
) -> Hl7Record:
    """Decode and read ``raw`` as the listener does (tolerant by default), then build its record; raises
    :class:`~formats.hl7.errors.MessageError` for what the listener would refuse."""
    decoded = charsets.decode(raw, default_charset, fallback_charset)
    header = read_message(decoded.text).header
    return hl7_record(raw, decoded, header, peer=peer, received_at=received_at, message_id=message_id)
