"""The listener in this process over loopback, with an in-memory record writer (a test double for Kafka)
and a real blob store: statuses, the order of storing and answering, TLS and who may associate."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from listeners.dicom.server import DicomListener
from listeners.dicom.settings import DicomSettings
from listeners.sink import SinkUnavailable
from medroute.blobstore import BlobStore
from medroute.config import AUDIT_EVENTS, DICOM_DEADLETTER, DICOM_INBOUND
from medroute.records import DeadLetter, DicomRecord
from tests.integration.dicom_peers import (
    association,
    contexts,
    part10_with_dataset,
    sample_file,
    sending_files_as_they_are,
    split_part10,
)

CT = contexts([CTImageStorage, Verification], [ExplicitVRLittleEndian])


class MemoryWriter:
    """Keeps records in a list; ``failure`` makes every put raise it."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []
        self.later: list[tuple[str, bytes | None, bytes]] = []
        self.failure: Exception | None = None

    def put(self, topic: str, key: bytes | None, value: bytes, timeout: float) -> None:
        if self.failure is not None:
            raise self.failure
        self.records.append((topic, key, value))

    def put_later(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.later.append((topic, key, value))

    def on(self, topic: str) -> list[bytes]:
        return [v for t, _, v in self.records + self.later if t == topic]


@pytest.fixture
def writer() -> MemoryWriter:
    return MemoryWriter()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", bytes(32))


def _listener(blobs: BlobStore, writer: MemoryWriter, **overrides: object) -> DicomListener:
    return DicomListener(replace(DicomSettings(port=0, host="127.0.0.1"), **overrides), blobs, writer)


@pytest.fixture(params=[True, False], ids=["fast-store", "pynetdicom-store"])
def listener(blobs: BlobStore, writer: MemoryWriter, request: pytest.FixtureRequest) -> Iterator[DicomListener]:
    """Each test runs with C-STOREs on the fast path (listeners.dicom.fastpath) and on pynetdicom's."""
    with _listener(blobs, writer, fast_store=request.param) as running:
        yield running


def test_stored_then_success(listener: DicomListener, writer: MemoryWriter, blobs: BlobStore) -> None:
    path = sample_file("CT_small.dcm")
    with sending_files_as_they_are(), association(listener.port, CT) as assoc:
        assert assoc.send_c_store(path).Status == 0x0000
    [(topic, key, value)] = writer.records
    record = DicomRecord.from_json(value)
    assert topic == DICOM_INBOUND and key == record.study_uid.encode()
    assert split_part10(blobs.get(record.blob))[1] == split_part10(path.read_bytes())[1]
    assert writer.on(AUDIT_EVENTS) == []  # the receive audit is the worker's (one Kafka write per image)


@pytest.mark.parametrize(
    ("failure", "status"),
    [(SinkUnavailable("broker down (test)"), 0xA700), (RuntimeError("a bug"), 0x0110)],
)
def test_a_failed_record_write_is_never_success(
    listener: DicomListener, writer: MemoryWriter, failure: Exception, status: int
) -> None:
    writer.failure = failure
    with association(listener.port, CT) as assoc:
        answer = assoc.send_c_store(sample_file("CT_small.dcm"))
    assert answer.Status == status and answer.ErrorComment
    assert writer.records == []
    reasons = [DeadLetter.from_json(v).reason for v in writer.on(DICOM_DEADLETTER)]
    assert reasons == [] or reasons == ["kafka_unavailable"]  # written later, if Kafka returns in time


def test_unwritable_blob_store(writer: MemoryWriter, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with _listener(BlobStore(tmp_path / "file" / "blobs", bytes(32)), writer) as listener, association(
        listener.port, CT
    ) as assoc:
        answer = assoc.send_c_store(sample_file("CT_small.dcm"))
    assert answer.Status == 0xA700
    assert writer.on(DICOM_INBOUND) == []
    [letter] = [DeadLetter.from_json(v) for v in writer.on(DICOM_DEADLETTER)]
    assert letter.reason == "blob_store_unavailable"


def test_dataset_that_contradicts_its_command(listener: DicomListener, writer: MemoryWriter, tmp_path: Path) -> None:
    template = sample_file("CT_small.dcm")
    other = sample_file("MR_small.dcm")  # a dataset sent under CT_small's SOP Class and Instance UID
    path = part10_with_dataset(tmp_path / "mismatch.dcm", template, split_part10(other.read_bytes())[1])
    with sending_files_as_they_are(), association(listener.port, CT) as assoc:
        assert assoc.send_c_store(path).Status == 0xA900
    assert writer.on(DICOM_INBOUND) == []
    assert [DeadLetter.from_json(v).reason for v in writer.on(DICOM_DEADLETTER)] == ["sop_mismatch"]


def test_peer_allowlist_and_called_ae(blobs: BlobStore, writer: MemoryWriter) -> None:
    with _listener(blobs, writer, allowed_peers=("10.0.0.0/8",)) as listener, association(listener.port, CT) as assoc:
        assert not assoc.is_established and not assoc.is_rejected  # closed before any association
    with _listener(blobs, writer) as listener:
        ae = AE(ae_title="PYSCU")
        ae.requested_contexts = CT
        assoc = ae.associate("127.0.0.1", listener.port, ae_title="SOMEONE_ELSE")
        assert assoc.is_rejected


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls(blobs: BlobStore, writer: MemoryWriter, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    with _listener(blobs, writer, tls_cert=str(cert), tls_key=str(key)) as listener:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        ae = AE(ae_title="PYSCU")
        ae.requested_contexts = CT
        assoc = ae.associate("127.0.0.1", listener.port, ae_title="MEDROUTE", tls_args=(client, "localhost"))
        assert assoc.is_established
        assert assoc.send_c_store(sample_file("CT_small.dcm")).Status == 0x0000
        assoc.release()
        with association(listener.port, CT) as plain:  # no TLS: no association
            assert not plain.is_established
        assert len(writer.on(DICOM_INBOUND)) == 1
