"""Blob references, the blob key and the sealed form: what every blob store writes and reads back.

A blob is named by the SHA-256 of its plaintext (``sha256:<hex>``) and stored sealed::

    b"MRB2" | 8-byte key id | 12-byte random nonce | AES-256-GCM(ciphertext + 16-byte tag)

with the reference as associated data, so a blob stored under another reference fails to decrypt. The key
id (the first 8 bytes of the key's SHA-256) names the key that sealed it, so that keys can be rotated: new
blobs are sealed under the current key, blobs sealed under an old key (``MEDROUTE_BLOB_OLD_KEYS``) stay
readable, and ``medroute blobs rekey`` re-seals them under the current one. Blobs of the first format
(``b"MRB1" | nonce | ...``, no key id) are read with each configured key in turn.
Unsealing checks the digest, so what comes back is exactly what was sealed, or an error. The stores
(:mod:`medroute.blobstore`, :mod:`medroute.blobstore_s3`) only decide where the sealed bytes live.

The key (32 bytes) comes from ``MEDROUTE_BLOB_KEY`` (64 hex characters or base64) or from the file
named by ``MEDROUTE_BLOB_KEY_FILE``; retired keys, read only, from ``MEDROUTE_BLOB_OLD_KEYS`` (or ``_FILE``),
separated by commas or new lines. Without either, a key file is created once at
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
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medroute.config import BLOB_KEY, BLOB_KEY_FILE, BLOB_OLD_KEYS, home_dir

MAGIC = b"MRB2"
LEGACY_MAGIC = b"MRB1"  # no key id
KEY_ID_BYTES = 8
NONCE_BYTES = 12
HEADER_BYTES = len(MAGIC) + KEY_ID_BYTES + NONCE_BYTES
KEY_MARK_BYTES = len(MAGIC) + KEY_ID_BYTES  # what says which key sealed a blob: enough to skip it in a rekey
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
    return checked_key(key)


def checked_key(key: bytes) -> bytes:
    """``key`` if it is an AES-256 key; ``BlobError`` otherwise."""
    if len(key) != KEY_BYTES:
        raise BlobError(f"blob key must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def key_from_env() -> bytes:
    """The key as configured (see the module docstring); creates the local default key file once."""
    direct = BLOB_KEY()
    if direct:
        return parse_key(direct)
    path = Path(BLOB_KEY_FILE() or home_dir() / "secrets" / "blob.key")
    if not path.exists() and not BLOB_KEY_FILE():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as stream:
            stream.write(secrets.token_hex(KEY_BYTES) + "\n")
    try:
        return parse_key(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BlobError(f"cannot read the blob key file {path}: {type(exc).__name__}") from None


def old_keys_from_env() -> tuple[bytes, ...]:
    """Retired keys, still accepted for reading (``MEDROUTE_BLOB_OLD_KEYS`` or ``_FILE``)."""
    text = BLOB_OLD_KEYS() or ""
    return tuple(parse_key(part) for part in text.replace("\n", ",").split(",") if part.strip())


def key_id(key: bytes) -> bytes:
    """What a sealed blob records of the key that sealed it (not enough to learn anything of the key)."""
    return hashlib.sha256(b"medroute blob key id" + key).digest()[:KEY_ID_BYTES]


class Keyring:
    """The current key, which seals, and the old ones, which only unseal."""

    def __init__(self, current: bytes, old: tuple[bytes, ...] = ()) -> None:
        self.current = checked_key(current)
        self.current_id = key_id(self.current)
        self._aeads = {key_id(k): AESGCM(k) for k in (self.current, *map(checked_key, old))}

    def sealed_under_current(self, sealed: bytes) -> bool:
        """Whether a sealed blob, or its first ``KEY_MARK_BYTES``, says the current key sealed it."""
        return sealed.startswith(MAGIC) and sealed[len(MAGIC) : KEY_MARK_BYTES] == self.current_id

    def unseal(self, reference: str, sealed: bytes) -> bytes:
        """The plaintext of a sealed blob, checked against its reference."""
        view = memoryview(sealed)  # sliced without copies: a blob can be an image of many megabytes
        if sealed.startswith(MAGIC) and len(sealed) >= HEADER_BYTES + 16:
            aead = self._aeads.get(sealed[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES])
            if aead is None:
                raise BlobError(f"blob {reference} is sealed under a key that is not configured")
            return _open(aead, reference, view[len(MAGIC) + KEY_ID_BYTES :])
        if sealed.startswith(LEGACY_MAGIC) and len(sealed) >= len(LEGACY_MAGIC) + NONCE_BYTES + 16:
            for aead in self._aeads.values():
                try:
                    return _open(aead, reference, view[len(LEGACY_MAGIC) :])
                except BlobError:
                    continue
            raise BlobError(f"blob {reference} fails authentication (wrong key, or altered)")
        raise BlobError(f"blob {reference} is not in medroute's blob format")


def reference_of(*parts: bytes | memoryview) -> str:
    """The reference of the bytes of ``parts``, one after the other."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return PREFIX + digest.hexdigest()


def digest_of(reference: str) -> str:
    """The hex digest of a well-formed reference; ``BlobError`` for anything else."""
    digest = reference[len(PREFIX) :]
    if not reference.startswith(PREFIX) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise BlobError(f"not a blob reference: {reference[:80]!r}")
    return digest


def seal(
    key: bytes, reference: str, parts: tuple[bytes | memoryview, ...], write: Callable[[memoryview], object]
) -> None:
    """Pass the sealed form of ``parts`` (see the module docstring) to ``write``, a chunk at a time, each
    chunk valid only during the call. Encrypted through a buffer kept per thread: no copy of the whole
    content is made (a fresh 0.5 MB buffer costs more in page faults than AES does)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(reference.encode("ascii"))
    buffer = _chunk_buffer()
    write(memoryview(MAGIC + key_id(key) + nonce))
    for part in parts:
        view = memoryview(part).cast("B")
        for start in range(0, len(view), CHUNK_BYTES):
            written = encryptor.update_into(view[start : start + CHUNK_BYTES], buffer)
            write(buffer[:written])
    write(memoryview(encryptor.finalize() + encryptor.tag))


def _open(aead: AESGCM, reference: str, nonce_and_ciphertext: memoryview) -> bytes:
    nonce = bytes(nonce_and_ciphertext[:NONCE_BYTES])
    try:
        data = aead.decrypt(nonce, nonce_and_ciphertext[NONCE_BYTES:], reference.encode("ascii"))
    except InvalidTag:
        raise BlobError(f"blob {reference} fails authentication (wrong key, or altered)") from None
    if reference_of(data) != reference:
        raise BlobError(f"blob {reference} decrypts to other content")
    return data


def _chunk_buffer() -> memoryview:
    """This thread's encryption output buffer (GCM writes at most a chunk plus a block less one)."""
    buffer = getattr(_per_thread, "buffer", None)
    if buffer is None:
        buffer = _per_thread.buffer = memoryview(bytearray(CHUNK_BYTES + 15))
    return buffer
