"""Writing through file descriptors, as every durable or in-memory write of medroute does it."""

from __future__ import annotations

import os
from pathlib import Path


def write_all(descriptor: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data``: ``os.write`` may take only part of it (a pipe, a large buffer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new entry in ``directory`` survive a power cut."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
