"""Associations spread over the listener's processes by load, not by hash.

With ``MEDROUTE_DICOM_PROCESSES`` > 1 the first process accepts every connection and hands it to the
process that has the fewest open connections (itself included), passing the socket over a Unix socket
pair (SCM_RIGHTS). SO_REUSEPORT's hash of the peer address put 6 of 8 simultaneous associations on one
process in some runs: that process was bound by its GIL while the other idled, ~40 % fewer images/s.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from listeners.processes import SPAWN

GONE = 1 << 30  # the count of a process that can no longer take connections
EOF_PAUSE = 0.5  # a sibling whose parent closed the channel: do not spin until SIGTERM arrives


class Load:
    """Open connections per process in shared memory: the accepting process counts a connection when
    it hands it over, the process serving it uncounts it when it closes."""

    def __init__(self, processes: int) -> None:
        self._counts = SPAWN.Array("i", processes)

    def assign(self) -> int:
        """Count one more connection on the least busy process; returns that process's index."""
        with self._counts.get_lock():
            counts = list(self._counts)
            index = counts.index(min(counts))
            self._counts[index] += 1
        return index

    def closed(self, index: int) -> None:
        with self._counts.get_lock():
            self._counts[index] = max(0, self._counts[index] - 1)

    def gone(self, index: int) -> None:
        with self._counts.get_lock():
            self._counts[index] = GONE

    def counts(self) -> list[int]:
        with self._counts.get_lock():
            return list(self._counts)


@dataclass
class Dispatch:
    """One process's part: its index (0 accepts) and its channel(s): the accepting process holds one
    channel per sibling (index n at ``channels[n]``), a sibling holds its own end."""

    index: int
    load: Load
    channels: dict[int, socket.socket] = field(default_factory=dict)

    @classmethod
    def for_processes(cls, processes: int) -> tuple[Dispatch, list[Dispatch]]:
        """The accepting process's part and each sibling's (to pass to the sibling when it starts)."""
        load = Load(processes)
        ours, siblings = cls(0, load), []
        for index in range(1, processes):
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            ours.channels[index] = mine
            siblings.append(cls(index, load, {index: theirs}))
        return ours, siblings

    @property
    def accepts(self) -> bool:
        return self.index == 0

    @property
    def channel(self) -> socket.socket:
        """A sibling's end of its channel."""
        return self.channels[self.index]

    def hand_over(self, connection: socket.socket) -> bool:
        """Give ``connection`` to the least busy process. False: it is ours to serve. True: another
        process has it (our descriptor is closed; never ``shutdown()``: that would end theirs too)."""
        while True:
            index = self.load.assign()
            if index == self.index:
                return False
            try:
                socket.send_fds(self.channels[index], [b"c"], [connection.fileno()])
            except OSError:  # that sibling is gone: never pick it again
                self.load.gone(index)
                continue
            connection.close()
            return True

    def receive(self) -> socket.socket:
        """A sibling: the next connection handed to it (call when its channel is readable)."""
        _, descriptors, _, _ = socket.recv_fds(self.channel, 1, 1)
        if not descriptors:
            time.sleep(EOF_PAUSE)
            raise OSError("the accepting listener process closed the hand-over channel")
        return socket.socket(fileno=descriptors[0])

    def closed(self) -> None:
        """One of this process's connections has closed."""
        self.load.closed(self.index)

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
