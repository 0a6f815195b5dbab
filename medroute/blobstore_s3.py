"""The blob store on an S3-compatible object store (MinIO, Ceph RGW, AWS S3): the scale-out back end.

Same references, same sealed format (:mod:`medroute.sealing`) as :class:`medroute.blobstore.BlobStore`, and the
blobs are sealed here, so the object store holds ciphertext only; the object of ``sha256:<hex>`` is
``<prefix>/<hex[:2]>/<hex[2:4]>/<hex>``. ``put`` returns once the store has answered the PUT with success,
which S3-compatible stores give only for a durably written object; the body carries a SHA-256 checksum
that the store verifies before it answers.

Configuration: ``MEDROUTE_BLOB_URL=s3://bucket[/prefix]``; ``MEDROUTE_S3_ENDPOINT`` (e.g.
``https://minio.hospital.local:9000``; unset: AWS for the region), ``MEDROUTE_S3_REGION`` (default
us-east-1). Credentials come the standard AWS ways, never from this repository: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, or a credentials file named by ``AWS_SHARED_CREDENTIALS_FILE``; a private CA by
``AWS_CA_BUNDLE``. The EC2 instance-metadata lookup is off unless ``AWS_EC2_METADATA_DISABLED=false``: on a
hospital network, no request goes to an address nobody configured.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from medroute.config import EC2_METADATA_DISABLED, S3_ENDPOINT, S3_REGION
from medroute.sealing import KEY_MARK_BYTES, PREFIX, BlobError, Keyring, digest_of, reference_of, seal

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
ATTEMPTS = 3  # botocore's standard retry mode: transient errors and throttling are retried with backoff
MAX_CONNECTIONS = 64  # one per concurrent association or worker thread, with room
NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})  # GET says NoSuchKey; HEAD, having no body, 404
_OBJECT_NAME = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}")  # after the prefix: <hex[:2]>/<hex[2:4]>/<hex>


def _error(exc: Exception) -> str:
    """What went wrong, without request details: the S3 error code or the exception's name."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "error")
    return type(exc).__name__


class S3BlobStore:
    """Encrypted blobs as objects in ``bucket`` under ``prefix``. Safe to share between threads."""

    def __init__(self, bucket: str, prefix: str, key: bytes, client: Any, old_keys: tuple[bytes, ...] = ()) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._keys = Keyring(key, old_keys)
        self._client = client

    @classmethod
    def from_env(cls, url: str, key: bytes, old_keys: tuple[bytes, ...] = ()) -> S3BlobStore:
        """The store named by ``url`` (``s3://bucket[/prefix]``), reached as the module docstring says."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise BlobError(f"MEDROUTE_BLOB_URL must be s3://bucket[/prefix], got {url!r}")
        session = botocore.session.get_session()
        if EC2_METADATA_DISABLED():
            # The credential chain's last resort asks the instance-metadata address; on a hospital network
            # that is an address nobody configured, so the chain goes without it.
            session.get_component("credential_provider").remove("iam-role")
        config = Config(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"max_attempts": ATTEMPTS, "mode": "standard"},
            max_pool_connections=MAX_CONNECTIONS,
        )
        client = boto3.session.Session(botocore_session=session).client(
            "s3",
            endpoint_url=S3_ENDPOINT() or None,
            region_name=S3_REGION() or "us-east-1",
            config=config,
        )
        return cls(parsed.netloc, parsed.path, key, client, old_keys)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def object_key(self, reference: str) -> str:
        digest = digest_of(reference)
        name = f"{digest[:2]}/{digest[2:4]}/{digest}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, *parts: bytes | memoryview) -> str:
        """Store the bytes of ``parts``, one after the other, durably; returns their reference. Storing
        the same bytes twice is one object."""
        reference = reference_of(*parts)
        if reference in self:
            return reference
        self._put_sealed(reference, parts)
        return reference

    def _put_sealed(self, reference: str, parts: tuple[bytes | memoryview, ...]) -> None:
        """Seal ``parts`` under the current key into the object of ``reference`` (a PUT replaces an object whole:
        readers see the old one or the new one)."""
        body = io.BytesIO()
        seal(self._keys.current, reference, parts, body.write)
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self.object_key(reference), Body=body.getvalue(), ChecksumAlgorithm="SHA256"
            )
        except (BotoCoreError, ClientError) as exc:
            raise BlobError(f"cannot store blob in {self}: {_error(exc)}") from None

    def _read(self, reference: str, **ranged: str) -> bytes:
        """The sealed object of ``reference`` (or the ``Range`` of it that ``ranged`` names)."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self.object_key(reference), **ranged)
            return response["Body"].read()
        except ClientError as exc:
            if _error(exc) in NOT_FOUND:
                raise BlobError(f"blob {reference} is not in {self}") from None
            raise BlobError(f"cannot read blob {reference}: {_error(exc)}") from None
        except BotoCoreError as exc:
            raise BlobError(f"cannot read blob {reference}: {_error(exc)}") from None

    def get(self, reference: str) -> bytes:
        """The exact bytes that were put under ``reference``."""
        return self._keys.unseal(reference, self._read(reference))

    def references(self) -> Iterator[str]:
        """Every stored blob's reference: the objects under the prefix named as :meth:`object_key` names them."""
        start = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for entry in page.get("Contents", []):
                    name = entry["Key"][len(start) :]
                    if _OBJECT_NAME.fullmatch(name) and name[:2] == name[6:8] and name[3:5] == name[8:10]:
                        yield PREFIX + name[6:]
        except (BotoCoreError, ClientError) as exc:
            raise BlobError(f"cannot list the blobs of {self}: {_error(exc)}") from None

    def rekey(self, reference: str) -> bool:
        """Re-seal one blob under the current key, replacing its object; False when it already is. Only the
        first bytes of a blob already under the current key are read, so a rerun resumes at little cost."""
        if self._keys.sealed_under_current(self._read(reference, Range=f"bytes=0-{KEY_MARK_BYTES - 1}")):
            return False
        self._put_sealed(reference, (self.get(reference),))
        return True

    def __contains__(self, reference: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self.object_key(reference))
        except ClientError as exc:
            if _error(exc) in NOT_FOUND:
                return False
            raise BlobError(f"cannot look up blob {reference} in {self}: {_error(exc)}") from None
        except BotoCoreError as exc:
            raise BlobError(f"cannot look up blob {reference} in {self}: {_error(exc)}") from None
        return True
