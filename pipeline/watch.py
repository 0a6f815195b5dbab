"""A file watched for changes of content (routing rules, destinations): polled, compared by digest, so a
touch or a rewrite with the same bytes is no change."""

from __future__ import annotations

import hashlib
from pathlib import Path


class FileWatch:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest = self._read()

    def _read(self) -> bytes | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).digest()
        except OSError:
            return None  # being replaced, or gone: not a change to act on yet

    def changed(self) -> bool:
        digest = self._read()
        if digest is None or digest == self._digest:
            return False
        self._digest = digest
        return True
