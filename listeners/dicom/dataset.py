"""Check an encoded dataset's structure and read the few attributes a record needs, without decoding it.

pydicom reads leniently: a dataset cut short inside its pixel data, or a stream of random bytes, reads
as a smaller "valid" dataset. The listener must not acknowledge either, so this module walks every
element header (nested sequences and encapsulated pixel data included) and checks that each length
fits, that the stream ends exactly after the last element, and that the identifying UIDs are present.
Values are not decoded except the handful of top-level attributes collected; pixel data is skipped.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from pydicom.charset import convert_encodings, decode_bytes

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
MAX_DEPTH = 32  # nested sequences; deeper is an attack or garbage

# Explicit VRs with a 2-byte reserved field and a 4-byte length; all others have a 2-byte length.
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
SHORT_VRS = frozenset(b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split())

SPECIFIC_CHARACTER_SET = 0x00080005
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
MODALITY = 0x00080060
STUDY_DESCRIPTION = 0x00081030
SERIES_DESCRIPTION = 0x0008103E
BODY_PART_EXAMINED = 0x00180015
VIEW_POSITION = 0x00185101
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
WANTED = frozenset(
    {
        SPECIFIC_CHARACTER_SET,
        SOP_CLASS_UID,
        SOP_INSTANCE_UID,
        MODALITY,
        STUDY_DESCRIPTION,
        SERIES_DESCRIPTION,
        BODY_PART_EXAMINED,
        VIEW_POSITION,
        STUDY_INSTANCE_UID,
        SERIES_INSTANCE_UID,
    }
)
REQUIRED = {
    SOP_CLASS_UID: "SOP Class UID",
    SOP_INSTANCE_UID: "SOP Instance UID",
    STUDY_INSTANCE_UID: "Study Instance UID",
    SERIES_INSTANCE_UID: "Series Instance UID",
}


class DatasetError(Exception):
    """The bytes are not an acceptable dataset; ``reason`` is a dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DatasetHeader:
    """What a record needs from a dataset (text already decoded with its character set)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    modality: str
    body_part: str
    view_position: str
    study_description: str
    series_description: str


class _RanPastEndError(Exception):
    """Ran past the end of the data; whether that is truncation or garbage is decided by the caller."""


class _Walker:
    def __init__(self, data: bytes, little_endian: bool) -> None:
        self.data = data
        order = "<" if little_endian else ">"
        self.u32 = struct.Struct(order + "I").unpack_from
        self.tag_pair = struct.Struct(order + "HH").unpack_from
        # One unpack per element header: (group, element, VR, 2-byte length) or (group, element, length).
        self.explicit_header = struct.Struct(order + "HH2sH").unpack_from
        self.implicit_header = struct.Struct(order + "HHI").unpack_from
        self.values: dict[int, bytes] = {}

    def _fits(self, end: int, limit: int) -> None:
        if end > limit:
            if limit == len(self.data):
                raise _RanPastEndError
            raise DatasetError("malformed_dataset", "an element runs past the end of its item")

    def _tag(self, pos: int) -> int:
        group, element = self.tag_pair(self.data, pos)
        return group << 16 | element

    def dataset(self, pos: int, end: int | None, implicit: bool, depth: int) -> int:
        """Walk elements from ``pos`` to ``end`` (None: to an item delimiter); returns the position after."""
        if depth > MAX_DEPTH:
            raise DatasetError("malformed_dataset", f"sequences nested deeper than {MAX_DEPTH}")
        data, limit, top = self.data, len(self.data) if end is None else end, depth == 0
        explicit_header, implicit_header, u32 = self.explicit_header, self.implicit_header, self.u32
        while pos < limit:  # the hot loop of every C-STORE: locals, one unpack per header
            if pos + 8 > limit:
                self._fits(pos + 8, limit)
            if implicit:
                group, element, length = implicit_header(data, pos)
                vr, value_at = b"", pos + 8
            else:
                group, element, vr, length = explicit_header(data, pos)
                if vr in LONG_VRS:
                    if pos + 12 > limit:
                        self._fits(pos + 12, limit)
                    length, value_at = u32(data, pos + 8)[0], pos + 12
                elif vr in SHORT_VRS:
                    value_at = pos + 8
                elif group != 0xFFFE:
                    raise DatasetError("not_dicom", f"invalid value representation at offset {pos}")
            if group == 0xFFFE:
                tag = group << 16 | element
                if tag == ITEM_END and end is None:
                    return pos + 8
                raise DatasetError("not_dicom", f"unexpected delimiter tag {tag:08X} at offset {pos}")
            if length == UNDEFINED:
                if vr in (b"OB", b"OW"):  # encapsulated (compressed) pixel data: fragments
                    pos = self.items(value_at, None, implicit, depth, fragments=True)
                elif implicit or vr in (b"SQ", b"UN"):
                    # An undefined-length UN holds a sequence encoded as implicit VR little endian.
                    pos = self.items(value_at, None, implicit or vr == b"UN", depth, fragments=False)
                else:
                    raise DatasetError("not_dicom", f"undefined length on a {vr.decode('latin-1')} element")
                continue
            if value_at + length > limit:
                self._fits(value_at + length, limit)
            if top and (group << 16 | element) in WANTED:
                self.values[group << 16 | element] = data[value_at : value_at + length]
            if vr == b"SQ" and length:
                self.items(value_at, value_at + length, implicit, depth, fragments=False)
            pos = value_at + length
        if end is None:
            raise _RanPastEndError
        return pos

    def items(self, pos: int, end: int | None, implicit: bool, depth: int, fragments: bool) -> int:
        """Items of a sequence (or pixel data fragments) up to ``end`` or a sequence delimiter."""
        limit = len(self.data) if end is None else end
        while pos < limit:
            self._fits(pos + 8, limit)
            tag, length = self._tag(pos), self.u32(self.data, pos + 4)[0]
            pos += 8
            if tag == SEQUENCE_END:
                if end is not None:
                    raise DatasetError("malformed_dataset", "sequence delimiter in a defined-length sequence")
                return pos
            if tag != ITEM:
                raise DatasetError("not_dicom", f"expected an item tag, found {tag:08X} at offset {pos - 8}")
            if length == UNDEFINED:
                if fragments:
                    raise DatasetError("malformed_dataset", "pixel data fragment of undefined length")
                pos = self.dataset(pos, None, implicit, depth + 1)
                continue
            self._fits(pos + length, limit)
            if not fragments:
                self.dataset(pos, pos + length, implicit, depth + 1)
            pos += length
        if end is None:
            raise _RanPastEndError
        return pos


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(data)
    except zlib.error:
        raise DatasetError("not_dicom", "not a deflated dataset (the transfer syntax says deflated)") from None
    if not inflater.eof:
        raise DatasetError("truncated", "the deflated dataset ends early")
    return inflated


def _text(value: bytes | None, encodings: list[str]) -> str:
    if not value:
        return ""
    return decode_bytes(value, encodings, {0x5C}).strip(" \x00")


def _uid(value: bytes | None) -> str:
    return value.decode("ascii", "replace").strip(" \x00") if value else ""


def read_header(dataset: bytes, transfer_syntax: str) -> DatasetHeader:
    """Check ``dataset`` (encoded in ``transfer_syntax``, no file meta) and read its header.

    Raises :class:`DatasetError` with reason ``not_dicom``, ``truncated``, ``malformed_dataset`` or
    ``missing_attribute``.
    """
    if not dataset:
        raise DatasetError("not_dicom", "empty dataset")
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        dataset = _inflate(dataset)
    walker = _Walker(dataset, little_endian=transfer_syntax != EXPLICIT_VR_BIG_ENDIAN)
    try:
        walker.dataset(0, len(dataset), transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN, 0)
    except _RanPastEndError:
        # A real dataset cut short has its identifying UIDs near the start; garbage has none.
        if SOP_INSTANCE_UID in walker.values:
            raise DatasetError("truncated", f"the dataset ends inside an element ({len(dataset)} bytes)") from None
        raise DatasetError("not_dicom", "not a DICOM dataset (element lengths do not fit)") from None
    except struct.error:  # a header read past the end: cannot happen after _fits, but never crash on input
        raise DatasetError("not_dicom", "not a DICOM dataset") from None
    values = walker.values
    missing = [name for tag, name in REQUIRED.items() if not _uid(values.get(tag))]
    if missing:
        reason = "not_dicom" if len(missing) == len(REQUIRED) else "missing_attribute"
        raise DatasetError(reason, "no " + ", ".join(missing))
    charsets = [c.strip() for c in values.get(SPECIFIC_CHARACTER_SET, b"").decode("latin-1").split("\\")]
    encodings = convert_encodings([c for c in charsets if c] or ["ISO_IR 6"])
    return DatasetHeader(
        sop_class_uid=_uid(values[SOP_CLASS_UID]),
        sop_instance_uid=_uid(values[SOP_INSTANCE_UID]),
        study_uid=_uid(values[STUDY_INSTANCE_UID]),
        series_uid=_uid(values[SERIES_INSTANCE_UID]),
        modality=_text(values.get(MODALITY), encodings),
        body_part=_text(values.get(BODY_PART_EXAMINED), encodings),
        view_position=_text(values.get(VIEW_POSITION), encodings),
        study_description=_text(values.get(STUDY_DESCRIPTION), encodings),
        series_description=_text(values.get(SERIES_DESCRIPTION), encodings),
    )
