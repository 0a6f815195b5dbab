"""Content-addressed, encrypted, durable blob store: the claim-check behind ``dicom.inbound``.

A blob is named by the SHA-256 of its plaintext (``sha256:<hex>``) and stored as
``<root>/<hex[:2]>/<hex[2:4]>/<hex>`` in this layout::

    b"MRB1" | 12-byte random nonce | AES-256-GCM(ciphertext + 16-byte tag)

with the reference as associated data, so a file renamed to another reference fails to decrypt.
``put`` returns only after the file and its directory are fsynced: a listener may then promise the
sender the item is stored. ``get`` decrypts and checks the digest, so what comes back is exactly
what was put, or an error.

The key (32 bytes) comes from ``MEDROUTE_BLOB_KEY`` (64 hex characters or base64) or from the file
named by ``MEDROUTE_BLOB_KEY_FILE``. Without either, a key file is created once at
``$MEDROUTE_HOME/secrets/blob.key`` (mode 0600) so that a first ``medroute up`` works; production
installs mount their own key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medroute.config import env_str, home_dir

MAGIC = b"MRB1"
NONCE_BYTES = 12
KEY_BYTES = 32
PREFIX = "sha256:"
CHUNK_BYTES = 1 << 20  # encrypted and written at a time
_per_thread = threading.local()


class BlobError(Exception):
    """A blob cannot be written or read back intact; the message says which and why (no content)."""


def parse_key(text: str) -> bytes:
    """A 32-byte key from 64 hex characters or base64 text."""
    text = text.strip()
    try:
        key = bytes.fromhex(text) if len(text) == 2 * KEY_BYTES else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise BlobError("blob key must be 32 bytes as 64 hex characters or base64") from None
    if len(key) != KEY_BYTES:
        raise BlobError(f"blob key must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def key_from_env() -> bytes:
    """The key as configured (see the module docstring); creates the local default key file once."""
    direct = env_str("MEDROUTE_BLOB_KEY")
    if direct:
        return parse_key(direct)
    path = Path(env_str("MEDROUTE_BLOB_KEY_FILE") or home_dir() / "secrets" / "blob.key")
    if not path.exists() and not env_str("MEDROUTE_BLOB_KEY_FILE"):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as stream:
            stream.write(secrets.token_hex(KEY_BYTES) + "\n")
    try:
        return parse_key(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BlobError(f"cannot read the blob key file {path}: {type(exc).__name__}") from None


def reference_of(data: bytes) -> str:
    return PREFIX + hashlib.sha256(data).hexdigest()


class BlobStore:
    """A directory of encrypted blobs. Safe to share between threads and processes."""

    def __init__(self, root: str | Path, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise BlobError(f"blob key must be {KEY_BYTES} bytes, got {len(key)}")
        self.root = Path(root)
        self._key = key
        self._aead = AESGCM(key)

    @classmethod
    def from_env(cls) -> BlobStore:
        """``MEDROUTE_BLOB_DIR`` (default ``$MEDROUTE_HOME/blobs``) with the configured key."""
        return cls(env_str("MEDROUTE_BLOB_DIR") or home_dir() / "blobs", key_from_env())

    def path_of(self, reference: str) -> Path:
        if not reference.startswith(PREFIX):
            raise BlobError(f"not a blob reference: {reference[:80]!r}")
        digest = reference[len(PREFIX) :]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise BlobError(f"not a blob reference: {reference[:80]!r}")
        return self.root / digest[:2] / digest[2:4] / digest

    def put(self, *parts: bytes | memoryview) -> str:
        """Store the bytes of ``parts``, one after the other, durably; returns their reference. Storing
        the same bytes twice is one file. Encrypted in chunks through a buffer kept per thread: no copy
        of the whole content is made (a fresh 0.5 MB buffer costs more in page faults than AES does)."""
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part)
        reference = PREFIX + digest.hexdigest()
        path = self.path_of(reference)
        if path.exists():
            return reference  # same content, already durable (only complete files are renamed in)
        nonce = secrets.token_bytes(NONCE_BYTES)
        encryptor = Cipher(algorithms.AES(self._key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(reference.encode("ascii"))
        buffer = _chunk_buffer()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(descriptor, MAGIC + nonce)
                for part in parts:
                    view = memoryview(part).cast("B")
                    for start in range(0, len(view), CHUNK_BYTES):
                        written = encryptor.update_into(view[start : start + CHUNK_BYTES], buffer)
                        _write_all(descriptor, buffer[:written])
                _write_all(descriptor, encryptor.finalize() + encryptor.tag)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temporary, path)
            _fsync_directory(path.parent)
        except OSError as exc:
            raise BlobError(f"cannot store blob under {self.root}: {exc.strerror or type(exc).__name__}") from exc
        return reference

    def get(self, reference: str) -> bytes:
        """The exact bytes that were put under ``reference``."""
        path = self.path_of(reference)
        try:
            sealed = path.read_bytes()
        except FileNotFoundError:
            raise BlobError(f"blob {reference} is not in {self.root}") from None
        except OSError as exc:
            raise BlobError(f"cannot read blob {reference}: {exc.strerror or type(exc).__name__}") from exc
        if not sealed.startswith(MAGIC) or len(sealed) < len(MAGIC) + NONCE_BYTES + 16:
            raise BlobError(f"blob {reference} is not in medroute's blob format")
        nonce = sealed[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        try:
            data = self._aead.decrypt(nonce, sealed[len(MAGIC) + NONCE_BYTES :], reference.encode("ascii"))
        except InvalidTag:
            raise BlobError(f"blob {reference} fails authentication (wrong key, or altered)") from None
        if reference_of(data) != reference:
            raise BlobError(f"blob {reference} decrypts to other content")
        return data

    def __contains__(self, reference: str) -> bool:
        return self.path_of(reference).exists()


def _chunk_buffer() -> memoryview:
    """This thread's encryption output buffer (GCM writes at most a chunk plus a block less one)."""
    buffer = getattr(_per_thread, "buffer", None)
    if buffer is None:
        buffer = _per_thread.buffer = memoryview(bytearray(CHUNK_BYTES + 15))
    return buffer


def _write_all(descriptor: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
