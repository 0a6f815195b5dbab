"""The blob store on an S3-compatible object store: the same promises as the directory store (exact
bytes back, ciphertext only at rest, one object per content, errors instead of wrong data), and the
DICOM listener answers success only once the object is stored.

The object store is moto's S3 server on a local port, spoken to over HTTP by the real boto3 client, as
a MinIO or Ceph gateway would be."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from medroute import blobstore
from medroute.blobstore_s3 import S3BlobStore
from medroute.config import DICOM_DEADLETTER, DICOM_INBOUND, KafkaSettings
from medroute.ports import free_port
from medroute.records import utc_now
from medroute.sealing import KEY_MARK_BYTES, MAGIC, BlobError, key_id, reference_of
from tests.integration.conftest import DICOM_TEST_BLOB_KEY, start_dicom_listener
from tests.integration.dicom_peers import (
    association,
    contexts,
    contexts_of_files,
    sample_file,
    sending_files_as_they_are,
    split_part10,
)
from tests.integration.topic_reading import dead_letter_since, read_topic_sync
from tools.operations import blobs

# moto accepts any credentials; these only have to be present for boto3 to sign requests.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "medroute-test", "AWS_SECRET_ACCESS_KEY": "medroute-test-secret"}


@dataclass
class S3Peer:
    endpoint: str
    bucket: str

    def client(self) -> Any:  # boto3 generates its client classes at run time
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def env(self, prefix: str = "") -> dict[str, str]:
        """What a medroute process needs to keep its blobs in this server's bucket."""
        return {
            "MEDROUTE_BLOB_URL": f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}",
            "MEDROUTE_S3_ENDPOINT": self.endpoint,
            **CREDENTIALS,
        }


@pytest.fixture(scope="module")
def s3_peer() -> Iterator[S3Peer]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    peer = S3Peer(f"http://127.0.0.1:{port}", "medroute-blobs")
    peer.client().create_bucket(Bucket=peer.bucket)
    yield peer
    server.stop()


def _configure(monkeypatch: pytest.MonkeyPatch, peer: S3Peer, prefix: str) -> None:
    """This test process's environment names the peer's bucket under ``prefix``, with the test key."""
    for name, value in {**peer.env(prefix), "MEDROUTE_BLOB_KEY": DICOM_TEST_BLOB_KEY.hex()}.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def s3_env(s3_peer: S3Peer, monkeypatch: pytest.MonkeyPatch) -> S3Peer:
    _configure(monkeypatch, s3_peer, "site-a")
    return s3_peer


def _objects(peer: S3Peer, prefix: str) -> list[str]:
    listing = peer.client().list_objects_v2(Bucket=peer.bucket, Prefix=prefix)
    return [entry["Key"] for entry in listing.get("Contents", [])]


def test_configured_store_keeps_exact_bytes_as_ciphertext_objects(s3_env: S3Peer) -> None:
    store = blobstore.from_env()
    assert isinstance(store, S3BlobStore)
    head, body = b"\x00" * 132, os.urandom(3 * 1024 * 1024 + 17)  # several encryption chunks
    reference = store.put(head, memoryview(body))
    assert reference == reference_of(head + body)
    assert store.get(reference) == head + body
    digest = reference.removeprefix("sha256:")
    key = f"site-a/{digest[:2]}/{digest[2:4]}/{digest}"
    assert _objects(s3_env, "site-a/") == [key]
    stored = s3_env.client().get_object(Bucket=s3_env.bucket, Key=key)["Body"].read()
    assert stored.startswith(MAGIC) and body[:64] not in stored  # the object store holds ciphertext only

    assert store.put(head + body) == reference  # the same content again: still one object
    assert _objects(s3_env, "site-a/") == [key]
    assert reference in store and reference_of(b"never stored") not in store


def test_altered_missing_or_foreign_objects_are_errors(s3_env: S3Peer) -> None:
    store = blobstore.from_env()
    reference = store.put(b"a report's bytes")
    key = store.object_key(reference)
    client = s3_env.client()
    sealed = bytearray(client.get_object(Bucket=s3_env.bucket, Key=key)["Body"].read())
    sealed[-20] ^= 0x01
    client.put_object(Bucket=s3_env.bucket, Key=key, Body=bytes(sealed))
    with pytest.raises(BlobError, match="fails authentication"):
        store.get(reference)
    with pytest.raises(BlobError, match="is not in s3://medroute-blobs/site-a"):
        store.get(reference_of(b"never stored"))
    with pytest.raises(BlobError, match="not a blob reference"):
        store.get("sha256:../../etc/passwd")


def test_unreachable_store_or_missing_bucket_is_an_error(s3_env: S3Peer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDROUTE_BLOB_URL", "s3://no-such-bucket")
    with pytest.raises(BlobError, match="NoSuchBucket"):
        blobstore.from_env().put(b"bytes")
    monkeypatch.setenv("MEDROUTE_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BlobError, match="cannot"):
        blobstore.from_env().put(b"bytes")
    monkeypatch.setenv("MEDROUTE_BLOB_URL", "https://not-s3/bucket")
    with pytest.raises(BlobError, match="s3://bucket"):
        blobstore.from_env()


def test_dicom_listener_answers_success_only_with_the_object_stored(
    kafka: KafkaSettings, s3_peer: S3Peer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [sample_file(name) for name in ("CT_small.dcm", "RG1_UNCR.dcm")]  # 7 MB CR: several chunks
    listener = start_dicom_listener(kafka.bootstrap_servers, str(tmp_path / "ok"), **s3_peer.env("listener"))
    since = utc_now()
    try:
        with sending_files_as_they_are(), association(listener.port, contexts_of_files(files)) as assoc:
            statuses = [assoc.send_c_store(path).Status for path in files]
    finally:
        listener.process.stop()
    assert statuses == [0x0000, 0x0000]
    records = read_topic_sync(
        kafka, DICOM_INBOUND, until=lambda rs: sum(r["received_at"] >= since for r in rs) >= 2, timeout=60
    )
    # Read back as the worker does: the store its environment configures.
    _configure(monkeypatch, s3_peer, "listener")
    store = blobstore.from_env()
    blobs = {r["blob"] for r in records if r["received_at"] >= since}
    assert len(blobs) == 2 and len(_objects(s3_peer, "listener/")) == 2
    received = sorted(split_part10(store.get(blob))[1] for blob in blobs)
    assert received == sorted(split_part10(path.read_bytes())[1] for path in files)

    missing = start_dicom_listener(
        kafka.bootstrap_servers, str(tmp_path / "missing"), **{**s3_peer.env(), "MEDROUTE_BLOB_URL": "s3://absent"}
    )
    since = utc_now()
    try:
        with association(missing.port, contexts([CTImageStorage], [ExplicitVRLittleEndian])) as assoc:
            answer = assoc.send_c_store(files[0])
    finally:
        missing.process.stop()
    assert answer.Status == 0xA700 and "blob" in answer.ErrorComment
    assert dead_letter_since(kafka, DICOM_DEADLETTER, since, "blob_store_unavailable") is not None


def _sealed_by(peer: S3Peer, keys: list[str]) -> dict[str, bytes]:
    """Each object's key mark: the format and the id of the key that sealed it."""
    client = peer.client()
    return {key: client.get_object(Bucket=peer.bucket, Key=key)["Body"].read()[:KEY_MARK_BYTES] for key in keys}


def test_rekey_reseals_every_object_in_place_and_resumes(
    s3_peer: S3Peer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    contents = [f"image {n}".encode() for n in range(3)] + [os.urandom(2 * 1024 * 1024 + 5)]  # several chunks
    _configure(monkeypatch, s3_peer, "rekey")
    monkeypatch.setenv("MEDROUTE_BLOB_KEY", old_key.hex())
    before = [blobstore.from_env().put(data) for data in contents]
    client = s3_peer.client()
    for stranger in ("rekey/notes.txt", "rekey-other/00/00/" + "0" * 64):  # not blobs of this store: left alone
        client.put_object(Bucket=s3_peer.bucket, Key=stranger, Body=b"not a blob")

    monkeypatch.setenv("MEDROUTE_BLOB_KEY", new_key.hex())  # the rotation: every process gets both keys
    monkeypatch.setenv("MEDROUTE_BLOB_OLD_KEYS", old_key.hex())
    rotated = blobstore.from_env()
    assert [rotated.get(r) for r in before] == contents  # old blobs readable before the rekey
    after = rotated.put(b"image after rotation")
    assert rotated.rekey(before[0]) is True  # as if a first run had stopped after one blob
    assert blobs.main(["rekey"]) == 0
    assert "re-sealed 3, already under the current key 2, failed 0" in capsys.readouterr().out
    objects = _objects(s3_peer, "rekey/")
    assert len(objects) == 6  # five blobs and the stranger, nothing added
    resealed = _sealed_by(s3_peer, [rotated.object_key(r) for r in [*before, after]])
    assert set(resealed.values()) == {MAGIC + key_id(new_key)}
    stored = {key: client.get_object(Bucket=s3_peer.bucket, Key=key)["Body"].read() for key in objects}
    assert blobs.main(["rekey"]) == 0  # a rerun has nothing left to do, and rewrites nothing
    assert "re-sealed 0, already under the current key 5, failed 0" in capsys.readouterr().out
    assert stored == {key: client.get_object(Bucket=s3_peer.bucket, Key=key)["Body"].read() for key in objects}
    assert [rotated.get(r) for r in before] == contents  # and readable after it, with the old key still listed

    monkeypatch.delenv("MEDROUTE_BLOB_OLD_KEYS")  # the old key can now be retired
    assert [blobstore.from_env().get(r) for r in [*before, after]] == [*contents, b"image after rotation"]
    assert client.get_object(Bucket=s3_peer.bucket, Key="rekey/notes.txt")["Body"].read() == b"not a blob"
    monkeypatch.setenv("MEDROUTE_BLOB_KEY", os.urandom(32).hex())  # a key that opens none of them
    assert blobs.main(["rekey"]) == 1
    assert capsys.readouterr().err.count("failed: sha256:") == 5
    monkeypatch.setenv("MEDROUTE_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listening
    assert blobs.main(["rekey"]) == 2
    assert "cannot list the blobs of s3://medroute-blobs/rekey" in capsys.readouterr().err
