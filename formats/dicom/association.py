"""Latency and CPU savings in pynetdicom's per-association machinery, applied to each new association (the
listener's incoming ones and the forwarders' outgoing ones alike).

- pynetdicom leaves Nagle's algorithm on: the last, short P-DATA PDU of a C-STORE then waits for the
  receiver's delayed ACK of the ones before it, which held one association to ~110 images/s against
  ~480 with ``TCP_NODELAY`` (0.5 MB CT images to ``storescp``). PDUs go out whole (pynetdicom's
  ``sendall`` per PDU, :mod:`formats.dicom.cstore`'s one ``sendmsg`` per message): no tiny segments.

- pynetdicom reads every PDU in 4 KiB ``recv`` calls, each result appended to a growing bytearray: for
  a 0.5 MB image ~130 calls holding the GIL that all associations share. Reading straight into a
  buffer of the PDU's size with ``recv_into`` takes a few calls and ~60 % less CPU.
- Both threads of an association poll: the reactor sleeps 1 ms between looks at its DIMSE message
  queue, the DUL 1 ms between looks at its socket and its outgoing queue, so every open association
  wakes 2,000 times a second even while idle (8 idle associations: half a core). Here the reactor
  waits on its queue, and the DUL waits in ``select`` on its socket and on a wake-up socket that its
  outgoing queue signals, each for at most ``REACTOR_WAIT`` seconds: a PDU or a response is handled the
  moment it is there, an idle association wakes ~100 times a second, and release, abort and timers are
  still noticed within that wait. A requestor's reactor (the forwarders') takes no messages at all and
  wakes the moment a sender asks it to pause (see :class:`_RequestorDIMSEServiceProvider`).
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import threading
import time
from typing import Any

from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.transport import AssociationSocket

REACTOR_WAIT = 0.02


class _WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """The DUL's outgoing queue: a put also wakes the DUL from its ``select``."""

    def __init__(self, wake: socket.socket) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        with contextlib.suppress(OSError):  # full (it is already awake) or closed (association over)
            self._wake.send(b"\0")


class _BufferedAssociationSocket(AssociationSocket):
    wake: socket.socket | None = None  # read end of the wake-up pair

    @property
    def ready(self) -> bool:
        sock, wake = self.socket, self.wake
        if sock is None or not self._is_connected or wake is None:
            time.sleep(0.001)  # the DUL no longer pauses by itself: keep a closed connection's loop slow
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            readable, _, _ = select.select([sock, wake], [], [], REACTOR_WAIT)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # as pynetdicom's own ready(): the connection is gone
            return False
        if wake in readable:
            with contextlib.suppress(OSError):
                wake.recv(4096)
        return sock in readable

    def recv(self, nr_bytes: int) -> bytearray:
        assert self.socket is not None
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        read = 0
        while read < nr_bytes:
            count = self.socket.recv_into(view[read:], nr_bytes - read)
            if not count:  # the peer closed: return what arrived, as pynetdicom does
                del view
                return buffer[:read]
            read += count
        return buffer


class _WaitingDIMSEServiceProvider(DIMSEServiceProvider):
    def get_msg(self, block: bool = False) -> Any:
        if block:
            return super().get_msg(block=True)
        try:
            return self.msg_queue.get(timeout=REACTOR_WAIT)
        except queue.Empty:
            return None, None


class _RequestorDIMSEServiceProvider(DIMSEServiceProvider):
    """A requestor's: its reactor takes no messages (every message that comes is the answer to a request
    this side sent, and the sending thread reads it), and it wakes at once when a sender asks it to pause.

    pynetdicom's ``send_c_store`` and its siblings clear the reactor's checkpoint and spin until the reactor
    says it has paused; a reactor waiting on the message queue would answer only when its wait ran out (up
    to ``REACTOR_WAIT`` per request), and one that had just been let go could take the answer itself.
    """

    wake: threading.Event

    def get_msg(self, block: bool = False) -> Any:
        if block:
            return super().get_msg(block=True)
        self.wake.wait(REACTOR_WAIT)
        self.wake.clear()
        return None, None


class _WakingCheckpoint(threading.Event):
    """A requestor's reactor checkpoint: clearing it (a sender asking the reactor to pause) wakes the reactor."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake

    def clear(self) -> None:
        super().clear()
        self._wake.set()


def tune_association(event: Any) -> None:
    """``EVT_CONN_OPEN`` handler. An acceptor's runs before the association's threads start; a requestor's
    in its DUL thread as the connection opens, before its reactor starts and before anything is queued
    for it to send."""
    assoc = event.assoc
    if type(assoc.dimse) is DIMSEServiceProvider:
        if assoc.is_requestor:
            wake = threading.Event()
            assoc.dimse.__class__ = _RequestorDIMSEServiceProvider
            assoc.dimse.wake = wake
            checkpoint = _WakingCheckpoint(wake)
            if assoc._reactor_checkpoint.is_set():
                checkpoint.set()
            assoc._reactor_checkpoint = checkpoint
        else:
            assoc.dimse.__class__ = _WaitingDIMSEServiceProvider
    transport, dul = assoc.dul.socket, assoc.dul
    if transport.socket is not None:
        with contextlib.suppress(OSError):  # a socket already closed by the peer
            transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if type(transport) is not AssociationSocket or not dul.to_provider_queue.empty():
        return
    transport.__class__ = _BufferedAssociationSocket
    wake, signal = socket.socketpair()
    wake.setblocking(False)
    signal.setblocking(False)
    transport.wake = wake
    dul.to_provider_queue = _WakingQueue(signal)
    dul._run_loop_delay = 0  # the wait is in ready() now
    assoc._medroute_wake = (wake, signal)


def release_association(event: Any) -> None:
    """``EVT_CONN_CLOSE`` handler: close the wake-up pair (the garbage collector would, later)."""
    for end in getattr(event.assoc, "_medroute_wake", ()):
        end.close()
