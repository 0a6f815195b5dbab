"""``medroute blobs rekey``: re-seal every blob of the configured store (directory or S3) under the current key.

Rotation, step by step: make the new key ``MEDROUTE_BLOB_KEY`` and list the old one in
``MEDROUTE_BLOB_OLD_KEYS`` for every process (new blobs are sealed under the new key, old ones stay
readable); run ``medroute blobs rekey``; when it reports nothing left under an old key, drop the old key.
Each blob is replaced atomically (a renamed file, or a whole-object PUT) and carries the id of the key that
sealed it, so an interrupted run is simply run again: blobs already under the current key are skipped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from medroute.blobstore import StoredBlobs, from_env
from medroute.sealing import BlobError


def rekey_all(store: StoredBlobs) -> tuple[int, int, list[str]]:
    """(re-sealed, already under the current key, references that failed): the one loop for every store."""
    done = skipped = 0
    failed: list[str] = []
    for reference in store.references():
        try:
            if store.rekey(reference):
                done += 1
            else:
                skipped += 1
        except BlobError:
            failed.append(reference)
    return done, skipped, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medroute blobs", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["rekey"])
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        done, skipped, failed = rekey_all(from_env())
    except BlobError as exc:  # the store cannot be listed at all (unreachable, no such bucket, bad key)
        print(f"medroute blobs rekey: {exc}", file=sys.stderr)
        return 2
    print(f"re-sealed {done}, already under the current key {skipped}, failed {len(failed)}")
    for reference in failed:
        print(f"failed: {reference} (unreadable with the configured keys, or altered)", file=sys.stderr)
    return 1 if failed else 0
