"""The encrypted claim-check store: what is put comes back exactly, and nothing else does."""

from __future__ import annotations

import os
import stat

import pytest

from medroute.blobstore import BlobStore
from medroute.sealing import (
    CHUNK_BYTES,
    HEADER_BYTES,
    KEY_ID_BYTES,
    LEGACY_MAGIC,
    MAGIC,
    BlobError,
    key_from_env,
    key_id,
    parse_key,
    reference_of,
)

KEY = bytes(range(32))


@pytest.fixture
def store(tmp_path):
    return BlobStore(tmp_path / "blobs", KEY)


def test_put_get_round_trip_is_exact_and_encrypted(store):
    data = b"DICM" + os.urandom(100_000)
    reference = store.put(data)
    assert reference == reference_of(data)
    assert store.get(reference) == data
    on_disk = store.path_of(reference).read_bytes()
    assert on_disk.startswith(MAGIC)
    assert data[:64] not in on_disk  # ciphertext, not the plaintext
    assert stat.S_IMODE(store.path_of(reference).stat().st_mode) == 0o600


def test_parts_are_stored_as_their_concatenation_across_chunks(store):
    # Larger than one encryption chunk, split at odd places: one blob of the joined bytes, which the
    # one-shot AES-GCM of the reader decrypts.
    head, body, tail = b"\x00" * 132, os.urandom(CHUNK_BYTES + 12_345), os.urandom(7)
    joined = head + body + tail
    reference = store.put(head, memoryview(body), tail)
    assert reference == reference_of(joined) == store.put(joined)
    assert store.get(reference) == joined
    assert store.path_of(reference).stat().st_size == HEADER_BYTES + len(joined) + 16


def test_same_content_is_stored_once(store):
    first = store.put(b"same bytes")
    second = store.put(b"same bytes")
    assert first == second
    assert len([p for p in store.root.rglob("*") if p.is_file()]) == 1


def test_wrong_key_fails_authentication(store, tmp_path):
    reference = store.put(b"secret")
    other = BlobStore(store.root, bytes(32))
    with pytest.raises(BlobError, match="key that is not configured"):
        other.get(reference)
    forged = bytearray(store.path_of(reference).read_bytes())  # the key id rewritten to name the other key
    forged[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES] = key_id(bytes(32))
    store.path_of(reference).write_bytes(bytes(forged))
    with pytest.raises(BlobError, match="fails authentication"):
        other.get(reference)


def test_altered_or_moved_blob_is_refused(store):
    one, two = store.put(b"one"), store.put(b"two")
    path = store.path_of(one)
    sealed = bytearray(path.read_bytes())
    sealed[-1] ^= 0x01
    path.write_bytes(bytes(sealed))
    with pytest.raises(BlobError, match="fails authentication"):
        store.get(one)
    # A valid file copied under another reference does not decrypt there (the reference is bound in).
    store.path_of(one).write_bytes(store.path_of(two).read_bytes())
    with pytest.raises(BlobError, match="fails authentication"):
        store.get(one)


def test_missing_and_malformed_references(store):
    with pytest.raises(BlobError, match="is not in"):
        store.get(reference_of(b"never stored"))
    for bad in ("md5:abc", "sha256:../../etc/passwd", "sha256:" + "G" * 64):
        with pytest.raises(BlobError, match="not a blob reference"):
            store.get(bad)


def test_unwritable_root_raises_blob_error(tmp_path):
    # A file where the store's directory should be: fails for root too, unlike a chmod.
    root = tmp_path / "not-a-directory"
    root.write_bytes(b"")
    with pytest.raises(BlobError, match="cannot store blob"):
        BlobStore(root, KEY).put(b"x")


def test_keys_from_hex_base64_env_and_default_file(tmp_path, monkeypatch):
    assert parse_key(KEY.hex()) == KEY
    import base64

    assert parse_key(base64.b64encode(KEY).decode()) == KEY
    with pytest.raises(BlobError, match="32 bytes"):
        parse_key("abcd")
    monkeypatch.delenv("MEDROUTE_BLOB_KEY", raising=False)
    monkeypatch.delenv("MEDROUTE_BLOB_KEY_FILE", raising=False)
    monkeypatch.setenv("MEDROUTE_HOME", str(tmp_path))
    created = key_from_env()
    key_file = tmp_path / "secrets" / "blob.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_from_env() == created  # created once, then reused
    monkeypatch.setenv("MEDROUTE_BLOB_KEY", KEY.hex())
    assert key_from_env() == KEY
    monkeypatch.delenv("MEDROUTE_BLOB_KEY")
    monkeypatch.setenv("MEDROUTE_BLOB_KEY_FILE", str(tmp_path / "absent.key"))
    with pytest.raises(BlobError, match="cannot read the blob key file"):
        key_from_env()  # a configured key file that is missing is an error, never silently created


def test_key_rotation_old_blobs_readable_new_under_new_key_and_rekey_resumes(tmp_path):
    old_key, new_key = os.urandom(32), os.urandom(32)
    old = BlobStore(tmp_path, old_key)
    before = [old.put(f"image {n}".encode()) for n in range(3)]
    rotated = BlobStore(tmp_path, new_key, old_keys=(old_key,))
    assert [rotated.get(r) for r in before] == [f"image {n}".encode() for n in range(3)]
    after = rotated.put(b"image after rotation")
    with pytest.raises(BlobError):
        old.get(after)  # sealed under the new key only
    assert rotated.rekey(before[0]) is True  # as if a first run stopped after one blob
    assert sorted(r for r in rotated.references() if rotated.rekey(r)) == sorted(before[1:])
    assert not any(rotated.rekey(r) for r in rotated.references())  # a rerun has nothing left to do
    alone = BlobStore(tmp_path, new_key)  # the old key can now be retired
    assert [alone.get(r) for r in before] == [f"image {n}".encode() for n in range(3)]


def test_first_format_blobs_are_read_and_rekeyed(tmp_path):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = os.urandom(32)
    store = BlobStore(tmp_path, key)
    data = b"sealed before key ids existed"
    reference = reference_of(data)
    nonce = os.urandom(12)
    store.path_of(reference).parent.mkdir(parents=True)
    store.path_of(reference).write_bytes(LEGACY_MAGIC + nonce + AESGCM(key).encrypt(nonce, data, reference.encode()))
    assert store.get(reference) == data
    assert store.rekey(reference) and store.path_of(reference).read_bytes().startswith(MAGIC)
    assert store.get(reference) == data


def test_old_keys_from_the_environment(monkeypatch, tmp_path):
    from medroute.sealing import old_keys_from_env

    first, second = os.urandom(32), os.urandom(32)
    monkeypatch.setenv("MEDROUTE_BLOB_OLD_KEYS", f"{first.hex()},\n{second.hex()}")
    assert old_keys_from_env() == (first, second)
    monkeypatch.delenv("MEDROUTE_BLOB_OLD_KEYS")
    assert old_keys_from_env() == ()
