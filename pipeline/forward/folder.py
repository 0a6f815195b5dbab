"""The ``folder`` destination: the item written into a directory, complete or not at all.

The file is written under a temporary name in its target directory, fsynced, renamed into place, and the
directory fsynced: a reader (a watch-folder import, mercure, a script) never sees half a file, and a file
that is there survives a power cut. The name comes from ``pattern`` (default ``{kind}/{message_id}.{ext}``);
an existing file of the same name is replaced (a delivery repeated after a crash writes the same file).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

from medroute.fileio import fsync_directory, write_all
from pipeline.forward.destinations import Destination
from pipeline.forward.errors import PermanentError, RetryableError
from pipeline.forward.items import Item
from pipeline.forward.naming import DEFAULT_PATTERN, file_name


class FolderSender:
    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self._root = Path(destination.option("path"))
        self._pattern = destination.option("pattern", DEFAULT_PATTERN)

    async def send(self, item: Item) -> str:
        relative = file_name(self._pattern, item)
        await asyncio.to_thread(self._write, self._root / relative, item.content)
        return "written"

    def _write(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                write_all(descriptor, data)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temporary, path)
            fsync_directory(path.parent)
        except PermissionError as exc:
            raise PermanentError("permission_denied", str(exc)) from None
        except OSError as exc:  # a full or unmounted disk may come back
            raise RetryableError("write_failed", f"{type(exc).__name__}: {exc.strerror}") from None

    async def close(self) -> None:
        return None
