"""Retry timing and the circuit breaker of one destination. Pure, with the clock and randomness injected."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full-range jitter: attempt n waits ``initial * multiplier**(n-1)`` seconds,
    capped at ``maximum``, then scaled by a random factor in ``[1 - jitter, 1]`` so that many items (or many
    forwarders) do not retry in lock step."""

    initial: float = 1.0
    maximum: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        return base * (1.0 - self.jitter * rand())


CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Breaker:
    """Closed: deliveries go ahead. After ``threshold`` failures in a row it opens for ``open_seconds``
    (doubling each time a probe fails, up to ``max_open_seconds``): no delivery is attempted. Then one
    probe is let through (half open); its success closes the breaker, its failure opens it again."""

    def __init__(
        self,
        threshold: int = 5,
        open_seconds: float = 5.0,
        max_open_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.open_seconds = open_seconds
        self.max_open_seconds = max_open_seconds
        self._clock = clock
        self.failures = 0
        self.state = CLOSED
        self._opened_at = 0.0
        self._open_for = open_seconds
        self._probing = False

    def wait_time(self) -> float:
        """Seconds until a delivery may be tried (0: now). A caller given 0 in the half-open state holds
        the one probe until it reports :meth:`success` or :meth:`failure`."""
        if self.state == CLOSED:
            return 0.0
        if self.state == OPEN:
            remaining = self._opened_at + self._open_for - self._clock()
            if remaining > 0:
                return remaining
            self.state = HALF_OPEN
        if self._probing:
            return min(1.0, self._open_for)  # someone else's probe is out: look again shortly
        self._probing = True
        return 0.0

    def success(self) -> None:
        self.failures = 0
        self.state = CLOSED
        self._probing = False
        self._open_for = self.open_seconds

    def failure(self) -> None:
        self.failures += 1
        if self.state == HALF_OPEN:
            self._probing = False
            self._open_for = min(self.max_open_seconds, self._open_for * 2)
            self._open()
        elif self.state == CLOSED and self.failures >= self.threshold:
            self._open()

    def abandon(self) -> None:
        """The probe ended without an answer (cancelled): let another one through."""
        self._probing = False

    def _open(self) -> None:
        self.state = OPEN
        self._opened_at = self._clock()
