"""Sending DICOM files over C-STORE (pynetdicom as the SCU), one line per file with the status.

Used by ``medroute up`` for its sample traffic; any PACS or modality sends the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE

# Sample images that ship with pydicom (a CT and an MR) and, where the pydicom-data package is
# installed, a real chest radiograph. Looked up locally only: never downloaded.
SAMPLE_NAMES = ("CT_small.dcm", "MR_small.dcm", "RG1_UNCR.dcm")


def sample_dicom_files() -> list[Path]:
    from pydicom.data import get_testdata_file

    found = (get_testdata_file(name, download=False) for name in SAMPLE_NAMES)
    return [Path(str(path)) for path in found if path]


def send_dicom(paths: Sequence[Path], host: str, port: int, called_ae: str, calling_ae: str = "MEDROUTE-UP") -> int:
    """Send every file on one association; 0 when each got status 0x0000, else 1."""
    datasets = [dcmread(path) for path in paths]
    ae = AE(ae_title=calling_ae)
    for sop_class, syntax in {(d.SOPClassUID, d.file_meta.TransferSyntaxUID) for d in datasets}:
        ae.add_requested_context(sop_class, syntax)
    association = ae.associate(host, port, ae_title=called_ae)
    if not association.is_established:
        print(f"association with {called_ae} at {host}:{port} was not accepted", flush=True)
        return 1
    failures = 0
    try:
        for path, dataset in zip(paths, datasets, strict=True):
            status = association.send_c_store(dataset)
            code = getattr(status, "Status", None)
            failures += code != 0
            shown = f"0x{code:04X}" if code is not None else "no response"
            print(f"{path.name}: C-STORE status {shown} {getattr(status, 'ErrorComment', '')}".rstrip(), flush=True)
    finally:
        association.release()
    return 1 if failures else 0
