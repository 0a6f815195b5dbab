"""DICOM peers no one here wrote (DCMTK's storescu/echoscu, pynetdicom as SCU) and the test files that
pydicom and pydicom-data ship."""

from __future__ import annotations

import io
import os
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context

STORESCU = "STORESCU"
ECHOSCU = "ECHOSCU"
PYSCU = "PYSCU"
CALLED = "MEDROUTE"

# storescu proposes uncompressed transfer syntaxes unless told which compressed one to offer.
STORESCU_PROPOSE = {
    "1.2.840.10008.1.2.4.50": "-xy",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "-xx",  # JPEG extended
    "1.2.840.10008.1.2.4.70": "-xs",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "-xt",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.90": "-xv",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "-xw",  # JPEG 2000
    "1.2.840.10008.1.2.5": "-xr",  # RLE
    "1.2.840.10008.1.2.1.99": "-xd",  # deflated
    "1.2.840.10008.1.2.2": "-xb",  # big endian
}
TRAILING_PADDING = 0xFFFCFFFC
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def sample_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, f"{name} is not in pydicom's or pydicom-data's test files"
    return Path(path)


def transfer_syntax_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def split_part10(data: bytes) -> tuple[bytes, bytes]:
    """(preamble + file meta, dataset) of a Part-10 file's bytes."""
    assert data[128:132] == b"DICM", "not a Part-10 file"
    pos = 132
    while data[pos : pos + 2] == b"\x02\x00":  # group 0002, explicit VR little endian
        if data[pos + 4 : pos + 6] in LONG_VRS:
            pos += 12 + struct.unpack_from("<I", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return data[:pos], data[pos:]


def same_content(stored: bytes, sent: Path) -> bool:
    """Element by element: DCMTK re-encodes what it sends (without group lengths and trailing padding,
    which the standard lets it drop), so the bytes may differ."""

    def elements(ds: Dataset) -> dict[int, object]:
        return {int(e.tag): e.value for e in ds if e.tag.element != 0 and e.tag != TRAILING_PADDING}

    return elements(pydicom.dcmread(io.BytesIO(stored))) == elements(pydicom.dcmread(sent))


def dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}  # Debian's DCMTK leaves Nagle on without it


def storescu(port: int, files: list[Path], calling: str = STORESCU, *options: str) -> subprocess.CompletedProcess:
    """One association sending ``files`` (all in one transfer syntax: storescu proposes one kind)."""
    propose = STORESCU_PROPOSE.get(transfer_syntax_of(files[0]))
    command = ["storescu", "-nh", *options, *([propose] if propose else [])]
    command += ["-aet", calling, "-aec", CALLED, "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True, timeout=120)


def echoscu(port: int, calling: str = ECHOSCU) -> subprocess.CompletedProcess:
    command = ["echoscu", "-aet", calling, "-aec", CALLED, "127.0.0.1", str(port)]
    return subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True, timeout=60)


def contexts(sop_classes: list[str], transfer_syntaxes: list[str]) -> list[PresentationContext]:
    return [build_context(sop, transfer_syntaxes) for sop in sop_classes]


def contexts_of_files(files: list[Path]) -> list[PresentationContext]:
    """One context per SOP class and transfer syntax of ``files``: an acceptor picks one transfer syntax
    per context (medroute, like storescp, prefers explicit VR little endian), so a file is sent as it is
    only where its own transfer syntax has a context of its own."""
    pairs = set()
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        pairs.add((str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
    return [build_context(sop, [syntax]) for sop, syntax in sorted(pairs)]


@contextmanager
def association(port: int, requested: list[PresentationContext], calling: str = PYSCU) -> Iterator[Association]:
    ae = AE(ae_title=calling)
    ae.requested_contexts = requested
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


@contextmanager
def sending_files_as_they_are() -> Iterator[None]:
    """pynetdicom sends a file's dataset bytes unchanged (no decode/re-encode) in chunked mode."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before


def part10_with_dataset(path: Path, template: Path, dataset: bytes) -> Path:
    """A file with ``template``'s file meta and any ``dataset`` bytes (broken ones included)."""
    meta, _ = split_part10(template.read_bytes())
    path.write_bytes(meta + dataset)
    return path


def renumbered_copies(template: Path, directory: Path, count: int) -> list[Path]:
    """``count`` instances of ``template``, each with its own SOP Instance UID, in one new study."""
    directory.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(template)
    study = generate_uid()
    paths = []
    for n in range(count):
        ds.StudyInstanceUID = study
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = n + 1
        path = directory / f"instance{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
