"""Content-addressed, encrypted, durable blob store: the claim-check behind ``dicom.inbound``.

Blobs are sealed as :mod:`medroute.sealing` says and stored as ``<root>/<hex[:2]>/<hex[2:4]>/<hex>``.
``put`` returns only after the file and its directory are fsynced: a listener may then promise the
sender the item is stored. ``get`` unseals, so what comes back is exactly what was put, or an error.

:func:`from_env` gives the configured store: this directory store, or with ``MEDROUTE_BLOB_URL=s3://...``
the same blobs as objects of an S3-compatible store (:mod:`medroute.blobstore_s3`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from medroute.config import BLOB_DIR, BLOB_URL, home_dir
from medroute.fileio import fsync_directory, write_all
from medroute.sealing import (
    KEY_MARK_BYTES,
    PREFIX,
    BlobError,
    Keyring,
    digest_of,
    key_from_env,
    old_keys_from_env,
    reference_of,
    seal,
)


class Blobs(Protocol):
    """What the listener and the worker need of a blob store (:class:`BlobStore`, or S3's)."""

    def put(self, *parts: bytes | memoryview) -> str: ...

    def get(self, reference: str) -> bytes: ...

    def __contains__(self, reference: str) -> bool: ...


class StoredBlobs(Blobs, Protocol):
    """A configured store as a whole (:func:`from_env`): what ``medroute blobs rekey`` walks through."""

    def references(self) -> Iterator[str]:
        """Every stored blob's reference."""
        ...

    def rekey(self, reference: str) -> bool:
        """Re-seal one blob under the current key, replacing it atomically; False when it already is."""
        ...


def from_env() -> StoredBlobs:
    """The configured store: ``MEDROUTE_BLOB_URL`` ``s3://bucket[/prefix]`` for an S3-compatible object store,
    else the directory ``MEDROUTE_BLOB_DIR`` (default ``$MEDROUTE_HOME/blobs``); with the configured key."""
    url = BLOB_URL()
    if url:
        try:
            from medroute.blobstore_s3 import S3BlobStore  # boto3 only where S3 is configured
        except ModuleNotFoundError as exc:
            raise BlobError(f"MEDROUTE_BLOB_URL needs {exc.name}: pip install 'medroute[s3]'") from None
        return S3BlobStore.from_env(url, key_from_env(), old_keys_from_env())
    return BlobStore(BLOB_DIR() or home_dir() / "blobs", key_from_env(), old_keys_from_env())


class BlobStore:
    """A directory of encrypted blobs. Safe to share between threads and processes."""

    def __init__(self, root: str | Path, key: bytes, old_keys: tuple[bytes, ...] = ()) -> None:
        self.root = Path(root)
        self._keys = Keyring(key, old_keys)

    def path_of(self, reference: str) -> Path:
        digest = digest_of(reference)
        return self.root / digest[:2] / digest[2:4] / digest

    def put(self, *parts: bytes | memoryview) -> str:
        """Store the bytes of ``parts``, one after the other, durably; returns their reference. Storing
        the same bytes twice is one file."""
        reference = reference_of(*parts)
        path = self.path_of(reference)
        if path.exists():
            return reference  # same content, already durable (only complete files are renamed in)
        self._write_sealed(path, reference, parts)
        return reference

    def _write_sealed(self, path: Path, reference: str, parts: tuple[bytes | memoryview, ...]) -> None:
        """Seal ``parts`` into a temporary file, fsync it, rename it to ``path``, fsync the directory."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                seal(self._keys.current, reference, parts, lambda chunk: write_all(descriptor, chunk))
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temporary, path)
            fsync_directory(path.parent)
        except OSError as exc:
            raise BlobError(f"cannot store blob under {self.root}: {exc.strerror or type(exc).__name__}") from exc

    def get(self, reference: str) -> bytes:
        """The exact bytes that were put under ``reference``."""
        path = self.path_of(reference)
        try:
            sealed = path.read_bytes()
        except FileNotFoundError:
            raise BlobError(f"blob {reference} is not in {self.root}") from None
        except OSError as exc:
            raise BlobError(f"cannot read blob {reference}: {exc.strerror or type(exc).__name__}") from exc
        return self._keys.unseal(reference, sealed)

    def __contains__(self, reference: str) -> bool:
        return self.path_of(reference).exists()

    def references(self) -> Iterator[str]:
        """Every stored blob's reference (temporary files of unfinished puts are skipped)."""
        for path in sorted(self.root.glob("??/??/*")):
            if len(path.name) == 64 and not path.name.startswith("."):
                yield PREFIX + path.name

    def rekey(self, reference: str) -> bool:
        """Re-seal one blob under the current key, in place and atomically; False when it already is.
        A crash leaves the blob either as it was or re-sealed, so a rerun resumes where this one stopped."""
        path = self.path_of(reference)
        try:
            with path.open("rb") as stream:
                if self._keys.sealed_under_current(stream.read(KEY_MARK_BYTES)):
                    return False
        except OSError as exc:
            raise BlobError(f"cannot read blob {reference}: {exc.strerror or type(exc).__name__}") from exc
        self._write_sealed(path, reference, (self.get(reference),))
        return True
