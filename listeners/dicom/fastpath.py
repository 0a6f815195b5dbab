"""C-STORE requests received, stored and answered in the association's network thread.

pynetdicom turns each received PDU into PDU, primitive and DIMSE message objects, hands the finished
message to a second thread, calls the handler there through its event machinery, and encodes the
answer with pydicom's general writer; for a 0.5 MB CT image that is about a third of the listener's
CPU. Here, in the data transfer state (Sta6), the network thread reads each P-DATA-TF PDU into one
buffer and walks its presentation data values itself: the fragments of a C-STORE request on an
accepted storage context are joined once, stored by the same :class:`~listeners.dicom.store.StoreHandler`
and answered with a C-STORE response encoded here. Every other value (C-ECHO, anything unexpected)
goes to pynetdicom as its own P-DATA primitive, exactly as pynetdicom would have passed it on; so do
all PDUs in every other state. ``MEDROUTE_DICOM_FAST_STORE=false`` turns this path off.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA

from listeners.dicom.store import PROCESSING_FAILURE, received_over

if TYPE_CHECKING:
    from listeners.dicom.store import StoreHandler

log = structlog.get_logger("listeners.dicom")

P_DATA_TF = 0x04
PDU_TYPES = frozenset(range(0x01, 0x08))
COMMAND, LAST = 0x01, 0x02  # message control header bits (PS3.8 E.2)
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
NO_DATASET = 0x0101
# Command set elements (group 0000) this module reads or writes (PS3.7 E.1).
AFFECTED_SOP_CLASS, COMMAND_FIELD, MESSAGE_ID, RESPONDED_TO = 0x0002, 0x0100, 0x0110, 0x0120
DATASET_TYPE, STATUS, ERROR_COMMENT, AFFECTED_SOP_INSTANCE = 0x0800, 0x0900, 0x0902, 0x1000


def pdv_items(body: bytes | bytearray) -> list[tuple[int, memoryview]]:
    """The (context ID, message control header + fragment) values of a P-DATA-TF PDU's body, as views
    on it; ``ValueError`` when an item's length does not fit."""
    view, items, offset = memoryview(body), [], 0
    while offset < len(view):
        if offset + 6 > len(view):
            raise ValueError("truncated presentation data value item")
        (length,) = struct.unpack_from(">L", view, offset)
        if length < 2 or offset + 4 + length > len(view):
            raise ValueError("presentation data value item length out of range")
        items.append((view[offset + 4], view[offset + 5 : offset + 4 + length]))
        offset += 4 + length
    if not items:
        raise ValueError("P-DATA-TF without presentation data values")
    return items


def command_elements(command: bytes | memoryview) -> dict[int, bytes]:
    """The elements of an encoded command set (implicit VR little endian, group 0000) by element
    number; ``ValueError`` if it is not one."""
    elements, offset = {}, 0
    while offset < len(command):
        if offset + 8 > len(command):
            raise ValueError("truncated command element")
        group, element, length = struct.unpack_from("<HHL", command, offset)
        if group != 0x0000 or offset + 8 + length > len(command):
            raise ValueError("not a command set element")
        elements[element] = bytes(command[offset + 8 : offset + 8 + length])
        offset += 8 + length
    return elements


def _text(value: bytes) -> str:
    return value.rstrip(b"\x00 ").decode("ascii", "replace")


def _us(value: bytes) -> int:
    if len(value) != 2:
        raise ValueError("US element of the wrong length")
    return int.from_bytes(value, "little")


def _encoded(element: int, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return struct.pack("<HHL", 0x0000, element, len(value)) + value


def store_response(
    context_id: int, message_id: int, sop_class: str, sop_instance: str, status: int, comment: str = ""
) -> bytes:
    """The P-DATA-TF PDU of a C-STORE response: one PDV with the whole command set."""
    us = struct.Struct("<H").pack
    elements = [
        _encoded(AFFECTED_SOP_CLASS, sop_class.encode("ascii"), b"\x00"),
        _encoded(COMMAND_FIELD, us(C_STORE_RSP), b""),
        _encoded(RESPONDED_TO, us(message_id), b""),
        _encoded(DATASET_TYPE, us(NO_DATASET), b""),
        _encoded(STATUS, us(status), b""),
    ]
    if comment:  # LO: no backslash or control characters
        text = "".join(c if c.isprintable() and c != "\\" else " " for c in comment)
        elements.append(_encoded(ERROR_COMMENT, text.encode("ascii", "replace"), b" "))
    elements.append(_encoded(AFFECTED_SOP_INSTANCE, sop_instance.encode("ascii"), b"\x00"))
    body = b"".join(elements)
    command = _encoded(0x0000, struct.pack("<L", len(body)), b"") + body
    pdv = struct.pack(">LBB", len(command) + 2, context_id, COMMAND | LAST) + command
    return struct.pack(">BBL", P_DATA_TF, 0, len(pdv)) + pdv


@dataclass
class _Incoming:
    """A C-STORE request whose dataset is arriving."""

    context_id: int
    message_id: int
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    fragments: list[memoryview] = field(default_factory=list)


class FastStoreDUL(DULServiceProvider):
    """pynetdicom's DUL with C-STORE requests handled as the module says (set by class swap on a new
    association, with ``store`` then set on the instance)."""

    store: StoreHandler
    _incoming: _Incoming | None = None

    def _read_pdu_data(self) -> None:
        if self.state_machine.current_state != "Sta6":
            super()._read_pdu_data()
            return
        assert self.socket is not None
        try:
            header = self.socket.recv(6)
            pdu_type, _, length = struct.unpack(">BBL", header)
            if pdu_type not in PDU_TYPES:
                log.error("dicom.unknown_pdu_type", pdu_type=pdu_type)
                self.event_queue.put("Evt19")  # unrecognised PDU
                return
            body = self.socket.recv(length)
        except (OSError, struct.error):
            self.event_queue.put("Evt17")  # transport closed
            return
        if len(body) != length:
            self.event_queue.put("Evt17")
            return
        if pdu_type == P_DATA_TF:
            try:
                items = pdv_items(body)
            except ValueError:
                pass  # pynetdicom's decoder says what is wrong, below
            else:
                self._take(items)
                return
        try:
            pdu, event = self._decode_pdu(bytearray(header) + body)
        except Exception as exc:
            log.error("dicom.pdu_undecodable", error=type(exc).__name__)
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _take(self, items: list[tuple[int, memoryview]]) -> None:
        """Each value to the C-STORE being received, a new one, or (in order) to pynetdicom."""
        for_pynetdicom: list[list[Any]] = []
        for context_id, value in items:
            incoming = self._incoming
            if incoming is not None:
                if context_id != incoming.context_id or value[0] & COMMAND:
                    log.error("dicom.pdv_out_of_sequence")
                    self._incoming = None
                    self.event_queue.put("Evt19")  # aborts the association
                    return
                incoming.fragments.append(value[1:])
                if value[0] & LAST:
                    self._incoming = None
                    self._answer(incoming)
                continue
            if value[0] & COMMAND and value[0] & LAST and not for_pynetdicom and self.assoc.dimse.message is None:
                self._incoming = self._begin(context_id, value[1:])
                if self._incoming is not None:
                    continue
            for_pynetdicom.append([context_id, bytes(value)])
            if value[0] & LAST:
                self._to_pynetdicom(for_pynetdicom)
                for_pynetdicom = []
        if for_pynetdicom:
            self._to_pynetdicom(for_pynetdicom)

    def _to_pynetdicom(self, values: list[list[Any]]) -> None:
        primitive = P_DATA()
        primitive.presentation_data_value_list = values
        self.assoc.dimse.receive_primitive(primitive)  # what pynetdicom's DT-2 action does

    def _begin(self, context_id: int, command: memoryview) -> _Incoming | None:
        """A C-STORE request with a dataset to follow on an accepted context of its SOP class, or None
        (pynetdicom then handles the message)."""
        try:
            elements = command_elements(command)
            if _us(elements[COMMAND_FIELD]) != C_STORE_RQ or _us(elements[DATASET_TYPE]) == NO_DATASET:
                return None
            message_id = _us(elements[MESSAGE_ID])
            sop_class = _text(elements[AFFECTED_SOP_CLASS])
            sop_instance = _text(elements[AFFECTED_SOP_INSTANCE])
        except (KeyError, ValueError):
            return None
        context = next((cx for cx in self.assoc.accepted_contexts if cx.context_id == context_id), None)
        if context is None or context.abstract_syntax != sop_class or not context.transfer_syntax:
            return None
        return _Incoming(context_id, message_id, sop_class, sop_instance, str(context.transfer_syntax[0]))

    def _answer(self, incoming: _Incoming) -> None:
        dataset = b"".join(incoming.fragments)
        incoming.fragments.clear()  # the views hold the PDU buffers
        try:
            item = received_over(
                self.assoc, incoming.transfer_syntax, incoming.sop_class, incoming.sop_instance, dataset
            )
            status, comment = self.store.store(item, self.assoc)
        except Exception as exc:  # the sender still gets an answer
            log.exception("dicom.fast_store_crashed", error=type(exc).__name__)
            status, comment = PROCESSING_FAILURE, "internal error"
        response = store_response(
            incoming.context_id, incoming.message_id, incoming.sop_class, incoming.sop_instance, status, comment
        )
        assert self.socket is not None
        self.socket.send(response)
