"""C-STORE requests written to an association's socket by the thread that sends them.

pynetdicom's ``send_c_store`` hands each P-DATA fragment of a request (128 KiB each for a receiver like
``storescp``) to the association's network thread through a queue and has it encode the PDU there: a
thread switch and a copy per fragment, under the one GIL that every association of the process shares.
Here the requesting thread encodes the command set and the PDUs itself and writes them at once (one
``sendmsg`` of headers and uncopied fragments); the answer is read as pynetdicom reads it (its network
thread decodes it and queues the C-STORE response).

The bytes on the wire are the ones pynetdicom would send (``tests/unit/test_dicom_cstore.py`` compares
them). This applies only to a dataset already encoded in the context's transfer syntax (a Part-10 file
whose syntax the receiver accepted), only on a plain TCP association (an SSL socket must not be written by
one thread while another reads it), and only while no other request is sent on the association.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

from pydicom import Dataset

PRIORITY_MEDIUM = 0x0000
C_STORE_RQ = 0x0001
DATASET_PRESENT = 0x0001  # any value but 0x0101 (none); pynetdicom and DCMTK send 0x0001
_PDV_HEADER = 6  # item length (4) + presentation context ID (1) + message control header (1)
_COMMAND, _LAST = 0x01, 0x02
_IOV_MAX = 1024  # buffers one sendmsg takes (Linux's UIO_MAXIOV)


def dataset_offset(part10: bytes) -> int | None:
    """Where a Part-10 file's dataset starts (after preamble, ``DICM`` and the file meta group), or None
    when the file meta group does not start with its group length."""
    if len(part10) < 144 or part10[128:132] != b"DICM" or part10[132:138] != b"\x02\x00\x00\x00UL":
        return None
    (group_length,) = struct.unpack_from("<I", part10, 140)
    offset = 144 + group_length
    return offset if offset <= len(part10) else None


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    encoded = value.encode("ascii")
    return encoded + b"\0" if len(encoded) % 2 else encoded


def command_set(sop_class: str, sop_instance: str, message_id: int) -> bytes:
    """A C-STORE-RQ command set, implicit VR little endian (PS3.7 9.3.1.1, E.1)."""
    body = b"".join((
        _element(0x0002, _uid(sop_class)),
        _element(0x0100, struct.pack("<H", C_STORE_RQ)),
        _element(0x0110, struct.pack("<H", message_id)),
        _element(0x0700, struct.pack("<H", PRIORITY_MEDIUM)),
        _element(0x0800, struct.pack("<H", DATASET_PRESENT)),
        _element(0x1000, _uid(sop_instance)),
    ))  # fmt: skip
    return _element(0x0000, struct.pack("<I", len(body))) + body


def _fragments(data: memoryview, size: int) -> Iterator[memoryview]:
    if size <= 0:
        yield data
        return
    for start in range(0, len(data), size):
        yield data[start : start + size]


def pdus(context_id: int, command: bytes, dataset: memoryview, max_length: int) -> Iterator[tuple[bytes, memoryview]]:
    """P-DATA-TF PDUs of one message, one PDV each, none longer than ``max_length`` (the receiver's
    maximum PDU length; 0 means no limit): each as its headers and its fragment, uncopied."""
    size = max_length - _PDV_HEADER if max_length else 0
    for flags, part in ((_COMMAND, memoryview(command)), (0, dataset)):
        fragments = list(_fragments(part, size))
        for n, fragment in enumerate(fragments):
            control = flags | (_LAST if n == len(fragments) - 1 else 0)
            pdv = struct.pack(">IBB", len(fragment) + 2, context_id, control)
            yield struct.pack(">BBI", 0x04, 0x00, len(pdv) + len(fragment)) + pdv, fragment


def send_buffers(sock: socket.socket, buffers: list[bytes | memoryview]) -> None:
    """Write ``buffers`` one after the other with as few system calls as the socket takes: each call gives
    up and takes back the GIL that every association of the process shares, and taking it back can wait for
    another thread's turn (milliseconds) — once per message instead of once per PDU."""
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        sent = sock.sendmsg(views[:_IOV_MAX])
        while views and sent >= len(views[0]):
            sent -= len(views.pop(0))
        if sent:
            views[0] = views[0][sent:]


def send_c_store(assoc: Any, context_id: int, sop_class: str, sop_instance: str, dataset: memoryview) -> Dataset:
    """Send one C-STORE request on ``assoc`` and return its status, as pynetdicom's ``send_c_store`` does
    (an empty Dataset when no answer came within the DIMSE timeout, after which the association is aborted).
    The association's reactor must not read DIMSE messages (``formats.dicom.association`` sees to that)."""
    assoc._assoc_message_id = message_id = (getattr(assoc, "_assoc_message_id", 0) % 0xFFFF) + 1
    command = command_set(sop_class, sop_instance, message_id)
    parts = pdus(context_id, command, dataset, assoc.acceptor.maximum_length)
    send_buffers(assoc.dul.socket.socket, [buffer for pdu in parts for buffer in pdu])
    _, response = assoc.dimse.get_msg(block=True)
    if response is None:
        assoc._handle_no_response()
        return Dataset()
    return assoc._check_received_status(response)
