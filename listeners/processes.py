"""Several listener processes on one port: what the MLLP and DICOM listeners share.

One Python process is bound to one core (an event loop, or pynetdicom's threads under the GIL). With
``count`` > 1 the first process spawns ``count - 1`` siblings. MLLP's siblings bind the same port with
SO_REUSEPORT and the kernel spreads new connections over them; the DICOM listener hands each connection
to the least busy process itself (:mod:`listeners.dicom.dispatch`). A sibling ends when its parent
goes, however it goes (kill -9 included), so no orphan keeps taking connections.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from typing import Any

SPAWN = multiprocessing.get_context("spawn")  # no fork of a process that already runs threads
PR_SET_PDEATHSIG = 1  # prctl option (Linux): the signal a process gets when its parent dies


def _run_sibling(parent_pid: int, serve: Callable[..., object], args: tuple[Any, ...]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        return
    serve(*args)


@contextlib.contextmanager
def sibling_processes(
    count: int,
    serve: Callable[..., object],
    grace: float,
    args_of: Callable[[int], tuple[Any, ...]] = lambda _: (),
) -> Iterator[list[BaseProcess]]:
    """Run ``serve(*args_of(n))`` (a module-level function: it is pickled by name) in ``count`` further
    processes, n = 1..count, for the duration of the block; on exit they get SIGTERM and up to ``grace``
    seconds to finish. Arguments may be sockets and :data:`SPAWN` shared objects: the children inherit them."""
    children = [
        SPAWN.Process(target=_run_sibling, args=(os.getpid(), serve, args_of(n)), daemon=True)
        for n in range(1, count + 1)
    ]
    for child in children:
        child.start()
    try:
        yield children
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.join(grace)
