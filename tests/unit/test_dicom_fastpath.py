"""The fast path's own encoding and decoding, checked against pynetdicom's (the listener's behaviour on
both paths is in test_dicom_store.py)."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from listeners.dicom.fastpath import COMMAND_FIELD, MESSAGE_ID, command_elements, pdv_items, store_response

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _decoded_response(pdu: bytes) -> DIMSEMessage:
    received = P_DATA_TF()
    received.decode(pdu)
    message = DIMSEMessage()
    assert message.decode_msg(received.to_primitive())
    return message


@pytest.mark.parametrize(
    ("status", "comment", "expected_comment"),
    [
        (0x0000, "", None),
        (0xA700, "blob store: No space left on device", "blob store: No space left on device"),
        (0xC002, "bad \\ value\x07 é", "bad   value  ?"),  # LO: no backslash or control characters
    ],
)
def test_store_response_is_what_pynetdicom_reads(status: int, comment: str, expected_comment: str | None) -> None:
    instance = "1.2.3.4.5"  # odd length: padded with a NUL
    pdu = store_response(7, 42, CT_IMAGE, instance, status, comment)
    message = _decoded_response(pdu)
    command = message.command_set
    assert message.context_id == 7
    assert command.CommandField == 0x8001 and command.CommandDataSetType == 0x0101
    assert command.MessageIDBeingRespondedTo == 42 and command.Status == status
    assert (command.AffectedSOPClassUID, command.AffectedSOPInstanceUID) == (CT_IMAGE, instance)
    assert command.get("ErrorComment") == expected_comment
    encoded = pdu[12:]  # after the PDU header (6), the PDV item length (4), context ID and control header
    assert command.CommandGroupLength == len(encoded) - 12  # the bytes after the group length element


def _store_request_pdus(dataset: bytes, max_pdu: int) -> list[bytes]:
    request = C_STORE()
    request.MessageID, request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = 9, CT_IMAGE, "1.2.3"
    request.Priority = 2
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    message.data_set = BytesIO(dataset)
    pdus = []
    for primitive in message.encode_msg(3, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        pdus.append(pdu.encode())
    return pdus


def test_pdv_items_and_command_of_a_pynetdicom_request() -> None:
    dataset = bytes(range(256)) * 40
    pdus = _store_request_pdus(dataset, 4096)
    [(context, command)] = pdv_items(pdus[0][6:])
    assert context == 3 and command[0] == 0x03  # a command, its last fragment
    elements = command_elements(command[1:])
    assert struct.unpack("<H", elements[COMMAND_FIELD]) == (0x0001,)
    assert struct.unpack("<H", elements[MESSAGE_ID]) == (9,)
    fragments = [value for pdu in pdus[1:] for _, value in pdv_items(pdu[6:])]
    assert [value[0] & 0x01 for value in fragments] == [0] * len(fragments)  # dataset fragments
    assert [value[0] & 0x02 for value in fragments][-1] == 0x02  # the last one says so
    assert b"".join(bytes(value[1:]) for value in fragments) == dataset


@pytest.mark.parametrize(
    "body",
    [
        b"",  # no items
        b"\x00\x00\x00\x10\x01\x03abc",  # item longer than the PDU
        b"\x00\x00\x00\x01\x01",  # item too short to hold a context ID and a header
        b"\x00\x00\x00\x02\x01\x03\x00",  # trailing bytes that are not an item
    ],
)
def test_malformed_pdv_items(body: bytes) -> None:
    with pytest.raises(ValueError):
        pdv_items(body)


def test_malformed_command_set() -> None:
    with pytest.raises(ValueError):
        command_elements(b"\x00\x00\x00\x01\x04\x00\x00\x00")  # an element of group 0001
    with pytest.raises(ValueError):
        command_elements(b"\x00\x00\x00\x01\x40\x00\x00\x00")  # runs past the end
