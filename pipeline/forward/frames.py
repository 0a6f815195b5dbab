"""The frames between ``medroute forward`` and its DICOM sender processes (:mod:`pipeline.forward.dicom_worker`):
a 4-byte big-endian length, then a pickle. Both ends are medroute's own processes, parent and child."""

from __future__ import annotations

import asyncio
import os
import pickle
import struct
from typing import Any

FRAME_LENGTH = struct.Struct(">I")  # before each frame's pickle


def frame(value: Any) -> bytes:
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME_LENGTH.pack(len(body)) + body


def read_frame(descriptor: int) -> Any:
    """The next frame's value, or None at the end of the stream."""
    header = _read_exactly(descriptor, FRAME_LENGTH.size)
    if header is None:
        return None
    body = _read_exactly(descriptor, FRAME_LENGTH.unpack(header)[0])
    return None if body is None else pickle.loads(body)  # from our own process at the other end


def _read_exactly(descriptor: int, size: int) -> bytes | None:
    chunks, missing = [], size
    while missing:
        chunk = os.read(descriptor, missing)
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


async def read_frame_from(stream: asyncio.StreamReader) -> Any:
    """The next frame's value from a child process's output; IncompleteReadError when the child ended."""
    (length,) = FRAME_LENGTH.unpack(await stream.readexactly(FRAME_LENGTH.size))
    return pickle.loads(await stream.readexactly(length))  # from our own child process
