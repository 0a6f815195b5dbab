"""The three UIDs a C-STORE needs, read straight from a Part-10 file's meta group (PS3.10 7.1).

The file meta group is always explicit VR little endian, so its elements can be walked without a DICOM
library: ~30 µs against ~1 ms for ``pydicom.dcmread(stop_before_pixels=True)`` on a CT image, which the
forwarder paid per image. Anything unexpected gives None, and the caller reads the file with pydicom.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PREAMBLE = 128
_META_START = PREAMBLE + 4  # after the preamble and b"DICM"
# Explicit VRs whose length is 4 bytes after 2 reserved ones (PS3.5 7.1.2); the rest have a 2-byte length.
_LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"))
_SOP_CLASS, _SOP_INSTANCE, _TRANSFER_SYNTAX = 0x0002, 0x0003, 0x0010


@dataclass(frozen=True)
class FileMeta:
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


def read_file_meta(part10: bytes | memoryview) -> FileMeta | None:
    """The SOP class, SOP instance and transfer syntax UIDs of a Part-10 file, or None when its meta group
    cannot be walked (no ``DICM``, a truncated element, a UID missing or not ASCII)."""
    data = memoryview(part10)
    if len(data) < _META_START or data[PREAMBLE:_META_START] != b"DICM":
        return None
    found: dict[int, bytes] = {}
    position = _META_START
    while position + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, position)
        if group != 0x0002:
            break  # the dataset starts
        vr = bytes(data[position + 4 : position + 6])
        if vr in _LONG_VRS:
            if position + 12 > len(data):
                return None
            (length,) = struct.unpack_from("<I", data, position + 8)
            start = position + 12
        else:
            (length,) = struct.unpack_from("<H", data, position + 6)
            start = position + 8
        if start + length > len(data):
            return None
        if element in (_SOP_CLASS, _SOP_INSTANCE, _TRANSFER_SYNTAX):
            found[element] = bytes(data[start : start + length])
        position = start + length
    try:
        uids = [found[key].rstrip(b"\0 ").decode("ascii") for key in (_SOP_CLASS, _SOP_INSTANCE, _TRANSFER_SYNTAX)]
    except (KeyError, UnicodeDecodeError):
        return None
    if not all(uids):
        return None
    return FileMeta(*uids)
