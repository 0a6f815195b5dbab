"""The C-STORE request that formats.dicom.cstore writes is, byte for byte, the one pynetdicom sends."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from formats.dicom.cstore import command_set, dataset_offset, pdus, send_buffers


def pynetdicom_pdus(part10: bytes, context_id: int, message_id: int, max_length: int) -> list[bytes]:
    ds = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True)
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = ds.SOPClassUID
    primitive.AffectedSOPInstanceUID = ds.SOPInstanceUID
    primitive.Priority = 0
    primitive.DataSet = io.BytesIO(part10[dataset_offset(part10) :])
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    encoded = []
    for p_data in message.encode_msg(context_id, max_length):
        pdu = P_DATA_TF()
        pdu.from_primitive(p_data)
        encoded.append(pdu.encode())
    return encoded


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm"])
@pytest.mark.parametrize("max_length", [0, 4096, 16384, 131072])
def test_pdus_match_pynetdicom(name: str, max_length: int) -> None:
    part10 = open(get_testdata_file(name), "rb").read()  # noqa: SIM115 - read whole
    ds = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True)
    dataset = memoryview(part10)[dataset_offset(part10) :]
    command = command_set(ds.SOPClassUID, ds.SOPInstanceUID, 9)
    ours = [bytes(head) + bytes(fragment) for head, fragment in pdus(5, command, dataset, max_length)]
    assert ours == pynetdicom_pdus(part10, 5, 9, max_length)


def test_dataset_offset_is_after_the_file_meta_group() -> None:
    part10 = open(get_testdata_file("CT_small.dcm"), "rb").read()  # noqa: SIM115 - read whole
    offset = dataset_offset(part10)
    assert offset is not None
    dataset = pydicom.dcmread(io.BytesIO(part10[offset:]), force=True)
    assert dataset.SOPInstanceUID == pydicom.dcmread(io.BytesIO(part10)).SOPInstanceUID
    assert dataset_offset(part10[:200]) is None  # cut inside the meta group
    assert dataset_offset(b"\0" * 128 + b"DICM" + b"\x02\x00\x01\x00OB" + b"\0" * 40) is None  # no group length
    assert dataset_offset(b"not dicom" * 40) is None


class _TrickleSocket:
    """Takes at most ``limit`` bytes per ``sendmsg``, as a socket with a full send buffer does."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.received = bytearray()
        self.calls = 0

    def sendmsg(self, buffers: list[memoryview]) -> int:
        self.calls += 1
        taken = b"".join(bytes(b) for b in buffers)[: self.limit]
        self.received += taken
        return len(taken)


@pytest.mark.parametrize("limit", [1, 7, 4096, 10**9])
def test_partial_sends_resume_where_they_stopped(limit: int) -> None:
    buffers = [b"head", memoryview(bytes(range(256)) * 40), b"", b"tail" * 3]
    sock = _TrickleSocket(limit)
    send_buffers(sock, buffers)  # type: ignore[arg-type]
    assert bytes(sock.received) == b"".join(bytes(b) for b in buffers)
    if limit == 10**9:
        assert sock.calls == 1  # one system call for the whole message when the socket takes it
