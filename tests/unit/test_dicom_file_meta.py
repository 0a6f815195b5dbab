"""formats.dicom.file_meta reads the three UIDs a C-STORE needs as pydicom does, and gives None (never an
exception) for anything it cannot walk."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from formats.dicom.file_meta import read_file_meta

TESTDATA = Path(get_testdata_file("CT_small.dcm")).parent
PART10 = sorted(p for p in TESTDATA.glob("*.dcm") if open(p, "rb").read(132)[128:] == b"DICM")  # noqa: SIM115
CT = Path(get_testdata_file("CT_small.dcm")).read_bytes()
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    derandomize="FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_most_test_files_are_read_without_pydicom() -> None:
    read = [path.name for path in PART10 if read_file_meta(path.read_bytes()) is not None]
    assert len(PART10) >= 20
    assert len(read) >= 0.9 * len(PART10)
    assert "meta_missing_tsyntax.dcm" not in read


@pytest.mark.parametrize("path", PART10, ids=lambda p: p.name)
def test_uids_are_pydicoms_or_none(path: Path) -> None:
    data = path.read_bytes()
    meta = read_file_meta(data)
    if meta is None:
        return  # left to pydicom (no transfer syntax, an implicit VR meta group, ...)
    expected = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
    assert meta.sop_class_uid == expected.MediaStorageSOPClassUID
    assert meta.sop_instance_uid == expected.MediaStorageSOPInstanceUID
    assert meta.transfer_syntax == expected.TransferSyntaxUID


@pytest.mark.parametrize("data", [b"", b"\0" * 128, b"\0" * 128 + b"DICM", b"MSH|^~\\&|", CT[128:]])
def test_what_is_no_part10_file_gives_none(data: bytes) -> None:
    assert read_file_meta(data) is None


def test_a_file_cut_inside_its_meta_group_gives_none() -> None:
    for end in range(128, 200):
        assert read_file_meta(CT[:end]) is None


@FUZZ
@given(st.integers(132, 400), st.binary(min_size=1, max_size=8), st.integers(0, 2000))
def test_altered_meta_groups_never_raise(at: int, patch: bytes, cut: int) -> None:
    data = CT[:at] + patch + CT[at + len(patch) :]
    meta = read_file_meta(data[: len(data) - cut])
    assert meta is None or all(isinstance(uid, str) and uid for uid in vars(meta).values())


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_after_the_preamble_never_raise(tail: bytes) -> None:
    read_file_meta(b"\0" * 128 + b"DICM" + tail)
