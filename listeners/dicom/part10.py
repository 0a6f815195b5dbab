"""The DICOM file (PS3.10) form of a received dataset: preamble, "DICM", file meta, then the dataset
bytes exactly as the sender encoded them; and the way back, from a file to its dataset bytes.

The file meta group is written here with ``struct`` rather than through pydicom: it is seven short
elements, and pydicom's general writer costs about a millisecond of (GIL-holding) CPU per image.
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from listeners.dicom.dataset import LONG_VRS, DatasetError

PREAMBLE = b"\x00" * 128 + b"DICM"
VERSION = b"\x00\x01"


def _element(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    if vr == b"OB":
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str) -> bytes:
    """The encoded file meta group (explicit VR little endian, with its group length)."""
    group = b"".join(
        (
            _element(0x0001, b"OB", VERSION, b"\x00"),
            _element(0x0002, b"UI", sop_class_uid.encode("ascii"), b"\x00"),
            _element(0x0003, b"UI", sop_instance_uid.encode("ascii"), b"\x00"),
            _element(0x0010, b"UI", transfer_syntax.encode("ascii"), b"\x00"),
            _element(0x0012, b"UI", PYNETDICOM_IMPLEMENTATION_UID.encode("ascii"), b"\x00"),
            _element(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" "),
            _element(0x0016, b"AE", source_ae.encode("ascii", "replace"), b" ") if source_ae else b"",
        )
    )
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(group)) + group


def file_parts(meta: bytes, dataset: bytes) -> tuple[bytes, bytes, bytes]:
    """The file's bytes in three parts (the blob store takes them as they are: no copy of the dataset)."""
    return PREAMBLE, meta, dataset


def as_file(meta: bytes, dataset: bytes) -> bytes:
    return b"".join(file_parts(meta, dataset))


def split_file(data: bytes) -> tuple[str, bytes]:
    """The transfer syntax and the dataset bytes of a Part-10 file (its file meta group walked, explicit
    VR little endian); raises :class:`DatasetError` for what is not one."""
    if data[128:132] != b"DICM":
        raise DatasetError("not_dicom", "not a DICOM Part-10 file (no 'DICM' after the 128-byte preamble)")
    position, transfer_syntax = 132, ""
    while position + 8 <= len(data) and data[position : position + 2] == b"\x02\x00":
        element = int.from_bytes(data[position + 2 : position + 4], "little")
        vr = data[position + 4 : position + 6]
        if vr in LONG_VRS:
            start, length = position + 12, int.from_bytes(data[position + 8 : position + 12], "little")
        else:
            start, length = position + 8, int.from_bytes(data[position + 6 : position + 8], "little")
        if element == 0x0010:
            transfer_syntax = data[start : start + length].decode("ascii", "replace").strip(" \x00")
        position = start + length
    if not transfer_syntax:
        raise DatasetError("not_dicom", "the file meta information has no Transfer Syntax UID")
    return transfer_syntax, data[position:]
