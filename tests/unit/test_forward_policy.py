"""Backoff and the circuit breaker, on a fake clock."""

from __future__ import annotations

from pipeline.forward.policy import CLOSED, HALF_OPEN, OPEN, Backoff, Breaker


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    backoff = Backoff(initial=1, maximum=10, multiplier=2, jitter=0.5)
    assert [backoff.delay(n, rand=lambda: 0.0) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]
    assert backoff.delay(3, rand=lambda: 1.0) == 2.0  # at most half taken off
    assert Backoff(jitter=0).delay(1) == 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_probes_once_and_closes_on_success() -> None:
    clock = Clock()
    breaker = Breaker(threshold=3, open_seconds=5, max_open_seconds=20, clock=clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.state == CLOSED and breaker.wait_time() == 0
    breaker.failure()
    assert breaker.state == OPEN and breaker.wait_time() == 5
    clock.now += 5
    assert breaker.wait_time() == 0 and breaker.state == HALF_OPEN  # the probe
    assert breaker.wait_time() > 0  # nobody else while the probe is out
    breaker.failure()  # the probe failed: open again, twice as long
    assert breaker.state == OPEN and breaker.wait_time() == 10
    clock.now += 10
    assert breaker.wait_time() == 0
    breaker.success()
    assert breaker.state == CLOSED and breaker.failures == 0 and breaker.wait_time() == 0


def test_an_abandoned_probe_lets_the_next_one_through() -> None:
    clock = Clock()
    breaker = Breaker(threshold=1, open_seconds=1, clock=clock)
    breaker.failure()
    clock.now += 1
    assert breaker.wait_time() == 0
    breaker.abandon()
    assert breaker.wait_time() == 0
