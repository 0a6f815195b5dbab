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
from typing import Any
from urllib.parse import urlparse

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from medroute.config import EC2_METADATA_DISABLED, S3_ENDPOINT, S3_REGION
from medroute.sealing import BlobError, Keyring, digest_of, reference_of, seal

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
ATTEMPTS = 3  # botocore's standard retry mode: transient errors and throttling are retried with backoff
MAX_CONNECTIONS = 64  # one per concurrent association or worker thread, with room
NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})  # GET says NoSuchKey; HEAD, having no body, 404


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
        return cls(parsed.netloc, parsed.path, key, client)

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
        body = io.BytesIO()
        seal(self._keys.current, reference, parts, body.write)
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self.object_key(reference), Body=body.getvalue(), ChecksumAlgorithm="SHA256"
            )
        except (BotoCoreError, ClientError) as exc:
            raise BlobError(f"cannot store blob in {self}: {_error(exc)}") from None
        return reference

    def get(self, reference: str) -> bytes:
        """The exact bytes that were put under ``reference``."""
        try:
            sealed = self._client.get_object(Bucket=self.bucket, Key=self.object_key(reference))["Body"].read()
        except ClientError as exc:
            if _error(exc) in NOT_FOUND:
                raise BlobError(f"blob {reference} is not in {self}") from None
            raise BlobError(f"cannot read blob {reference}: {_error(exc)}") from None
        except BotoCoreError as exc:
            raise BlobError(f"cannot read blob {reference}: {_error(exc)}") from None
        return self._keys.unseal(reference, sealed)

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
