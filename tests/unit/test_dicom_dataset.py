"""Structure check and header reading of encoded datasets, on the files pydicom ships and on broken ones."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from listeners.dicom.dataset import DatasetError, read_header

FILES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",  # deflated
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, encapsulated pixel data
    "JPEG-LL.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEG2000.dcm",
    "MR_small_RLE.dcm",
    "emri_small.dcm",  # enhanced multi-frame: deep functional group sequences
    "waveform_ecg.dcm",
    "liver.dcm",  # segmentation
    "rtplan.dcm",
]


def _split(path: str | Path) -> tuple[bytes, str, pydicom.Dataset]:
    raw = Path(path).read_bytes()
    meta = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
    start = 132 + 12 + meta.file_meta.FileMetaInformationGroupLength
    return raw[start:], str(meta.file_meta.TransferSyntaxUID), meta


def _sample(name: str) -> tuple[bytes, str, pydicom.Dataset]:
    path = get_testdata_file(name)
    assert path is not None
    return _split(path)


def _encode(ds: Dataset, implicit: bool = False) -> bytes:
    stream = DicomBytesIO()
    stream.is_little_endian, stream.is_implicit_VR = True, implicit
    write_dataset(stream, ds)
    return stream.getvalue()


def _minimal(**extra: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize("name", FILES)
def test_real_files_are_read_as_pydicom_reads_them(name: str) -> None:
    body, syntax, ds = _sample(name)
    header = read_header(body, syntax)
    assert header.sop_instance_uid == ds.SOPInstanceUID
    assert header.sop_class_uid == ds.SOPClassUID
    assert header.study_uid == ds.StudyInstanceUID
    assert header.series_uid == ds.SeriesInstanceUID
    assert header.modality == ds.get("Modality", "")
    assert header.study_description == ds.get("StudyDescription", "")
    assert header.series_description == ds.get("SeriesDescription", "")


def test_chest_radiograph_fields() -> None:
    header = read_header(*_sample("RG1_UNCR.dcm")[:2])
    assert (header.modality, header.body_part, header.view_position) == ("CR", "CHEST", "PA")
    assert header.study_description == "THORAX"


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "emri_small.dcm"])
@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_dataset_cut_short_is_truncated(name: str, keep: float) -> None:
    body, syntax, _ = _sample(name)
    with pytest.raises(DatasetError) as caught:
        read_header(body[: int(len(body) * keep)], syntax)
    assert caught.value.reason == "truncated"


def test_a_deflated_dataset_cut_short_is_truncated() -> None:
    ds = _minimal(ImageComments="x" * 2000)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = deflater.compress(_encode(ds)) + deflater.flush()
    assert read_header(deflated, "1.2.840.10008.1.2.1.99").sop_instance_uid == ds.SOPInstanceUID
    with pytest.raises(DatasetError) as caught:
        read_header(deflated[: len(deflated) // 2], "1.2.840.10008.1.2.1.99")
    assert caught.value.reason == "truncated"


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50"])
@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"hello, this is not DICOM at all\n" * 50,
        bytes(range(256)) * 20,
        b"\x00" * 64,
        b"%PDF-1.7\n" + b"\xff" * 999,
    ],
)
def test_garbage_is_not_dicom(syntax: str, garbage: bytes) -> None:
    with pytest.raises(DatasetError) as caught:
        read_header(garbage, syntax)
    assert caught.value.reason == "not_dicom"


def test_missing_identifiers() -> None:
    ds = _minimal()
    del ds.SeriesInstanceUID
    with pytest.raises(DatasetError) as caught:
        read_header(_encode(ds), "1.2.840.10008.1.2.1")
    assert caught.value.reason == "missing_attribute"
    assert "Series Instance UID" in caught.value.detail


@pytest.mark.parametrize("implicit", [False, True])
def test_nested_sequences_of_undefined_length(implicit: bool) -> None:
    inner = Dataset()
    inner.CodeValue, inner.CodeMeaning = "T-D3000", "Chest"
    item = Dataset()
    item.AnatomicRegionSequence = Sequence([inner])
    ds = _minimal(ReferencedImageSequence=Sequence([item, item]))
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.ReferencedImageSequence[0].is_undefined_length_sequence_item = True
    body = _encode(ds, implicit)
    syntax = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"
    assert read_header(body, syntax).sop_instance_uid == ds.SOPInstanceUID
    with pytest.raises(DatasetError):
        read_header(body[:-12], syntax)  # the sequence delimiter is gone


def test_an_item_overflowing_its_sequence_is_malformed() -> None:
    item = Dataset()
    item.CodeValue = "X" * 10
    ds = _minimal(ReferencedImageSequence=Sequence([item]))
    body = bytearray(_encode(ds))
    at = body.index(b"\xfe\xff\x00\xe0")  # the item tag
    struct.pack_into("<I", body, at + 4, 200)  # longer than the sequence that holds it
    with pytest.raises(DatasetError) as caught:
        read_header(bytes(body) + b"\x00" * 400, "1.2.840.10008.1.2.1")
    assert caught.value.reason in ("malformed_dataset", "not_dicom")


def test_text_is_decoded_with_the_specific_character_set() -> None:
    ds = _minimal(SpecificCharacterSet="ISO_IR 100")
    ds.StudyDescription = "Thorax pédiatrique"
    ds.SeriesDescription = "Schädel"
    stream = DicomBytesIO()
    stream.is_little_endian, stream.is_implicit_VR = True, False
    write_dataset(stream, ds)
    body = stream.getvalue()
    assert "é".encode("latin-1") in body
    header = read_header(body, "1.2.840.10008.1.2.1")
    assert (header.study_description, header.series_description) == ("Thorax pédiatrique", "Schädel")
