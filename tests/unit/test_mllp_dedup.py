"""The duplicate window: time-bounded, size-bounded, oldest first."""

from __future__ import annotations

from listeners.mllp.dedup import RecentMessages


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_seen_within_window_only() -> None:
    clock = Clock()
    recent = RecentMessages(window=600, max_entries=10, clock=clock)
    recent.add(("APP", "FAC", "1"))
    assert recent.seen(("APP", "FAC", "1"))
    assert not recent.seen(("APP", "FAC", "2"))
    clock.now += 599
    assert recent.seen(("APP", "FAC", "1"))
    clock.now += 2
    assert not recent.seen(("APP", "FAC", "1"))
    assert len(recent) == 0


def test_bounded_size_evicts_oldest() -> None:
    clock = Clock()
    recent = RecentMessages(window=600, max_entries=3, clock=clock)
    for n in range(5):
        clock.now += 1
        recent.add(n)
    assert len(recent) == 3
    assert [recent.seen(n) for n in range(5)] == [False, False, True, True, True]


def test_re_adding_refreshes() -> None:
    clock = Clock()
    recent = RecentMessages(window=10, max_entries=2, clock=clock)
    recent.add("a")
    clock.now += 5
    recent.add("b")
    recent.add("a")  # "a" is now the newest
    recent.add("c")
    assert not recent.seen("b") and recent.seen("a") and recent.seen("c")


def test_disabled() -> None:
    recent = RecentMessages(window=0, max_entries=10)
    recent.add("a")
    assert not recent.seen("a") and len(recent) == 0
