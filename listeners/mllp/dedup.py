"""Recently stored messages, to answer a resent message without storing it twice.

HL7 senders resend when an ACK is lost; (MSH-3, MSH-4, MSH-10) identifies a message. Memory is bounded
by a time window and a maximum size, oldest first. Times are wall-clock seconds, because entries are
shared between listener processes and restarts through Kafka (:mod:`listeners.mllp.shared_window`).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

import orjson


def identity_key(sending_application: str, sending_facility: str, control_id: str) -> str:
    """The window's key for a message: a digest, so the shared topic carries no identifier in clear."""
    joined = "\x1f".join((sending_application, sending_facility, control_id))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def window_entry(stored_at: float, message_id: str) -> bytes:
    """The value the shared window's topic holds for a stored message: when, and the record's id."""
    return orjson.dumps({"at": stored_at, "message_id": message_id})


class RecentMessages:
    def __init__(self, window: float, max_entries: int, clock: Callable[[], float] = time.time) -> None:
        self.window = window
        self.max_entries = max_entries
        self._clock = clock
        self._stored_at: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._stored_at)

    def _evict(self, now: float) -> None:
        entries = self._stored_at
        while entries and (len(entries) > self.max_entries or next(iter(entries.values())) <= now - self.window):
            entries.popitem(last=False)

    def seen(self, key: str) -> bool:
        """True when ``key`` was stored within the window."""
        if self.window <= 0:
            return False
        now = self._clock()
        self._evict(now)
        # Entries from other processes may arrive a little out of order: check the time itself too.
        return self._stored_at.get(key, float("-inf")) > now - self.window

    def add(self, key: str, at: float | None = None) -> None:
        """Remember ``key`` as stored at ``at`` (default: now)."""
        if self.window <= 0 or self.max_entries <= 0:
            return
        now = self._clock()
        stored_at = now if at is None else at
        if stored_at <= now - self.window or stored_at < self._stored_at.get(key, float("-inf")):
            return
        self._stored_at[key] = stored_at
        self._stored_at.move_to_end(key)
        self._evict(now)
