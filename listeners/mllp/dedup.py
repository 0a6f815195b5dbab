"""Recently stored messages, to answer a resent message without storing it twice.

HL7 senders resend when an ACK is lost; (MSH-3, MSH-4, MSH-10) identifies a message. Memory is bounded
by a time window and a maximum size, oldest first. It is per process and forgotten on restart: a
resend after a restart is stored again, which downstream idempotence tolerates (at-least-once).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class RecentMessages:
    def __init__(self, window: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.max_entries = max_entries
        self._clock = clock
        self._stored_at: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._stored_at)

    def _evict(self, now: float) -> None:
        entries = self._stored_at
        while entries and (len(entries) > self.max_entries or next(iter(entries.values())) <= now - self.window):
            entries.popitem(last=False)

    def seen(self, key: Hashable) -> bool:
        """True when ``key`` was stored within the window."""
        if self.window <= 0:
            return False
        self._evict(self._clock())
        return key in self._stored_at

    def add(self, key: Hashable) -> None:
        if self.window <= 0 or self.max_entries <= 0:
            return
        now = self._clock()
        self._stored_at[key] = now
        self._stored_at.move_to_end(key)
        self._evict(now)
